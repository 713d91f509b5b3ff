"""One file per method family; ``attribution/registry.py`` lists them. A family file imports the
interface (``attribution/method.py``) and the math, never the registry."""
