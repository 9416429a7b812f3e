"""The pieces of tools/train_demo_model.py: corpus, tokenizer, token stream, architecture,
training, outputs and the README template of the bundled demo model."""
