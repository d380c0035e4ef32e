"""Pure functions: LMU state-space matrices, LIF neuron steps, quantisation.

Everything here is stateless and operates on tensors or arrays; modules in
:mod:`lmuformer.model` are thin wrappers around these functions.
"""
