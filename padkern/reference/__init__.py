"""The pure-PyTorch reference path: the specification every other backend is tested against."""
