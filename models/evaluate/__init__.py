"""Evaluation of the generative methods: the domain feature network, Table 1, its figures."""
