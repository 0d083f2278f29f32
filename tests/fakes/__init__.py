"""Loopback fakes of the far side: LLM providers (and, elsewhere, the control plane)."""
