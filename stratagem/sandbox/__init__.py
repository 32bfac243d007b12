"""Running untrusted Python: process confinement and fair timing, below every other layer.

Both sides that run code they did not write use it: strategy programs (``agents/worker.py``)
and the code-sandbox environment (``envs/sandbox.py``). It imports nothing from stratagem, so
``envs`` may depend on it without depending on ``agents``, and a sandboxed child that imports
only this package starts in a fraction of the time a full ``stratagem.envs`` import takes.
"""
