"""MIA-Tuner: adapting an LLM, through a soft prompt, into its own pre-training data detector."""
