"""A short summary of a graph: nodes by type, neurons, synapses, latency, quantisation error."""

from __future__ import annotations

from collections import Counter

import nir
import numpy as np

from export.metadata import GraphMetadata


def synapse_count(node: nir.NIRNode) -> int:
    """Nonzero weights of a synapse node (0 for other nodes)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return int(np.count_nonzero(node.weight))
    return 0


def summarize(graph: nir.NIRGraph) -> dict:
    """Counts and metadata of a graph, as one JSON-ready dict."""
    md = GraphMetadata.of(graph)
    nodes = Counter(type(n).__name__ for n in graph.nodes.values())
    neurons = sum(
        int(np.size(n.v_threshold)) for n in graph.nodes.values() if isinstance(n, (nir.LIF, nir.IF))
    )
    graded = sum(int(np.size(n.r)) for n in graph.nodes.values() if isinstance(n, nir.I))
    lmu_synapses = sum(
        synapse_count(n) for n in graph.nodes.values() if n.metadata.get("role") in ("lmu", "lmu_tap")
    )
    out = {
        "nodes": dict(sorted(nodes.items())),
        "neurons": neurons,
        "graded_units": graded,
        "synapses": sum(synapse_count(n) for n in graph.nodes.values()),
        "lmu_synapses": lmu_synapses,
        "latency_frames": md.latency_frames,
        "dt": float(md.dt),
        "quantized": md.quantized,
        "lmu_form": md.lmu_form,
        "lmu": md.lmu_memory,
    }
    if out["quantized"]:
        out.update(weight_bits=md.weight_bits, weight_terms=md.weight_terms, lmu_bits=md.lmu_bits,
                   lmu_terms=md.lmu_terms)
        out["quantization_error"] = md.quantization_error
    return out


def format_summary(s: dict) -> str:
    """Human-readable lines of :func:`summarize`'s dict."""
    lines = [
        "nodes: " + ", ".join(f"{k} {v}" for k, v in s["nodes"].items()),
        f"neurons: {s['neurons']} spiking, {s['graded_units']} graded (LMU memory, readout)",
        f"synapses: {s['synapses']} (LMU {'taps' if s.get('lmu_form') == 'taps' else 'matrices'}: "
        f"{s['lmu_synapses']})",
        f"latency: {s['latency_frames']} frames; dt = {s['dt']} s",
    ]
    for m in s.get("lmu", []):
        if m.get("form") != "taps":
            continue
        line = (f"  {m['memory']}: {m['taps']} taps (delays 0..{m['max_delay']} steps, "
                f"{m['relays']} relays), {m['synapses']} synapses; "
                f"truncation error {m['truncation_error']:.2e} "
                f"over {m['steps']} steps, {m['stream_truncation_error']:.2e} on a stream")
        if "sops_per_inference" in m:
            line += f"; {m['sops_per_inference']:.4g} SOPs per inference ({m['u_spikes']:.3g} u spikes)"
        else:
            line += f"; {m['sops_per_u_spike']} SOPs per u spike"
        lines.append(line)
    if s["quantized"]:
        lines.append(
            f"quantised: learned weights as {s['weight_terms']} x {s['weight_bits']}-bit terms; "
            f"LMU {'taps' if s.get('lmu_form') == 'taps' else 'A-I and B'} as {s['lmu_terms']} x "
            f"{s['lmu_bits']}-bit terms (one synapse per term)"
        )
        err = s["quantization_error"]
        for m in err["lmu"]:
            if m.get("form") == "taps":
                lines.append(
                    f"  {m['memory']}: realised impulse response error {m['impulse_response_error']:.2e} "
                    f"over {m['steps']} steps (taps as {s['lmu_terms']} x {s['lmu_bits']}-bit terms)"
                )
                continue
            lines.append(
                f"  {m['memory']}: impulse response error {m['impulse_response_error']:.2e} over "
                f"{m['steps']} steps (A {m['A_error']:.2e}, B {m['B_error']:.2e}, relative)"
            )
        w = err["weights"]
        if w:
            worst = max(w, key=w.get)
            lines.append(
                f"  learned weights: relative error mean {np.mean(list(w.values())):.2e}, "
                f"worst {w[worst]:.2e} ({worst}); per matrix in --json"
            )
    if "accuracy_float" in s:
        lines.append(
            f"accuracy on {s['eval_dataset']} test ({s['eval_samples']} samples): float "
            f"{s['accuracy_float']:.4f}, quantised graph {s['accuracy_quantized']:.4f} "
            f"(drop {100 * (s['accuracy_float'] - s['accuracy_quantized']):.2f} pp)"
        )
    return "\n".join(lines)
