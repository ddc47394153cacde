"""Notebook support: setup and run records (`session`), checks of committed notebooks (`outputs`),
figures (`plots`) and tables of recorded results (`results`). Imports the core only, never a study."""
