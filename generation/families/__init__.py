"""One module per kind of model behind the interface in base.py; generation.catalog maps kinds to them."""
