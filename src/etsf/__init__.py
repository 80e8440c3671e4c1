"""eTSF host agent: eBPF SIP traffic steering (policy, datapath, CLI ``etsfctl``)."""

__version__ = "0.1.0"
