"""Training: the trainer shared by MIA-Tuner and the safeguards, their losses, continued
pre-training (membership injection) and the controlled-membership sets built with it."""
