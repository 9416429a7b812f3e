"""The model card a conversion writes, and the evaluation record added to it."""
