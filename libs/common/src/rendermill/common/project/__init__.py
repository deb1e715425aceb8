"""The Stoked UI project model, its parser and validator."""
