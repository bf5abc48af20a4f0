"""Audio import, validation and the default prompts."""
