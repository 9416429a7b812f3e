"""The Qt views over core objects: they show and edit, they compute nothing."""
