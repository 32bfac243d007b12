"""The LLM side of an episode: strategy programs, their sandbox, rewards and prompts."""
