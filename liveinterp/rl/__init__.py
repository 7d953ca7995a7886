"""Reinforcement learning: PPO with adaptive KL over the streaming decoder's rollouts."""
