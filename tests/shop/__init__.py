"""A small Django app for the model-flow tests (label ``shop``)."""
