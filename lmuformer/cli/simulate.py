"""``lmuf simulate``: run an exported NIR graph on Lava, the emulator or the torch re-import."""

from __future__ import annotations

import click

from backends.base import backend_nodes


def _nodes_help() -> str:
    nodes = backend_nodes()
    return "; ".join(f"{b}: {', '.join(n)}" for b, n in nodes.items())


@click.command("simulate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["lava", "emulator", "torch"]), default="emulator",
              show_default=True)
@click.option("--precision", type=click.Choice(["fixed", "float"]),
              help="Arithmetic (default: fixed; float on the torch backend, which has no fixed point).")
@click.option("--dataset", help="Test split to run (first --samples samples).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the dataset.")
@click.option("--samples", type=click.IntRange(min=1), help="Number of test samples (default: all).")
@click.option("--random", "use_random", is_flag=True, help="Standard-normal input of the graph's shape.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random input.")
@click.option("--no-compare", is_flag=True, help="Skip the agreement check against the torch re-import.")
@click.option("--dt", type=float, metavar="SECONDS",
              help="Frame period where the graph's metadata has none (a graph's own dt wins).")
@click.option("--frames", type=click.IntRange(min=1),
              help="Frames of the --random input where the graph records none.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results here.")
def command(model, backend, precision, dataset, data_dir, samples, use_random, seed, no_compare, dt, frames,
            json_path) -> None:
    """Simulate MODEL (a NIR file) on a dataset's test samples.

    Any NIR graph of these node types (nested NIRGraph nodes are inlined; a cycle without a
    Delay node is read as a one-step delay on its closing edge) runs, per backend: NODES
    """
    from lmuformer.files import check_outputs, write_json
    from lmuformer.jobs.simulate import simulate_file

    check_outputs({"--json": json_path}, inputs=[model])

    res = simulate_file(model, backend=backend, precision=precision, dataset=dataset, data_dir=data_dir,
                        samples=samples, random=use_random, seed=seed, compare=not no_compare, dt=dt,
                        frames=frames)
    for note in res["notes"]:
        click.echo(note, err=True)
    acc = "n/a (random input)" if res["accuracy"] is None else f"{res['accuracy']:.4f}"
    click.echo(f"{res['backend']} ({res['precision']}): {res['samples']} samples x {res['steps']} steps, "
               f"accuracy {acc}, {res['steps_per_second']:.1f} steps/s")
    if res.get("input_clipped"):
        click.echo(f"input clipped: {res['input_clipped']:.2e} of the input values exceed its grid's range")
    for name, frac in (res.get("a_in_overflow") or {}).items():
        click.echo(f"a_in overflow: {name}: {frac:.2e} of its synaptic inputs exceed Loihi's 16-bit a_in "
                   "(the current grid was calibrated for less)")
    if "emulator_predictions_equal" in res:
        click.echo(f"Lava vs the emulator (fixed point, the same integers): equal predictions on "
                   f"{res['emulator_predictions_equal']:.4f} of the samples")
    if "agreement" in res:
        click.echo(f"agreement with the float re-import: {res['agreement']:.4f}")
    if "spike_identity" in res:
        ident = res["spike_identity"]
        line = (f"identical spike trains (vs the float graph): {ident['identical']:.4f} "
                f"({ident['identical_samples']}/{ident['samples']} samples)")
        if ident["first_divergence"] is not None:
            firsts = ", ".join(f"{k} {v}" for k, v in ident["first_divergence_samples"].items())
            line += (f"; first diverging layer: {ident['first_divergence']} "
                     f"(samples by first divergence: {firsts})")
        click.echo(line)
    width = max((len(layer["name"]) for layer in res["layers"]), default=0)
    for layer in res["layers"]:
        rate = layer["spikes"] / (layer["neurons"] * res["samples"] * res["steps"])
        click.echo(f"  {layer['name']:<{width}}  {layer['neurons']:>6} neurons  "
                   f"{layer['spikes']:>10} spikes  rate {rate:.3f}")
    if json_path:
        write_json(json_path, res)
        click.echo(f"wrote {json_path}")


command.help = (command.help or "").replace("NODES", _nodes_help())
