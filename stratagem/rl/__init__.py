"""Reinforcement-learning pieces: what a GRPO learner needs beyond the model itself."""
