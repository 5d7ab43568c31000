"""Hypothesis strategies for the engine model's property tests: small engines and small workloads."""

import math
from dataclasses import replace

from hypothesis import strategies as st

from lengthwise.core.preempt import PreemptSettings
from lengthwise.sim.engine import EngineConfig, QueryConfig

configs = st.builds(
    EngineConfig,
    max_num_seqs=st.integers(1, 6),
    max_num_batched_tokens=st.integers(6, 80),
    block_size=st.sampled_from([1, 4, 16]),
    num_blocks=st.integers(40, 400),
    prefix_caching=st.booleans(),
    preemptive=st.booleans(),
    preempt_threshold=st.sampled_from([0.0, 5.0, math.inf]),
    query=st.sampled_from([None, QueryConfig(postfix_tokens=8, output_tokens=2, delay_s=0.01)]),
)
requests = st.lists(
    st.tuples(st.floats(0, 2), st.integers(1, 40), st.integers(1, 60), st.floats(1, 100)), min_size=1, max_size=25
)
#: Engines behind the gateway's preemption (`EngineConfig.preempt`), which excludes the engine's own.
gateway_configs = st.builds(
    replace, configs, preemptive=st.just(False),
    preempt=st.builds(
        PreemptSettings, margin=st.sampled_from([1.0, 2.0]), max=st.integers(0, 2),
        early=st.sampled_from([0.0, 0.5, 1.0]), check_every=st.integers(1, 8),
    ),
)  # fmt: skip
