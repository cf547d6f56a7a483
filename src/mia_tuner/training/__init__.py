"""Training: continued pre-training (membership injection); MIA-Tuner and safeguards later."""
