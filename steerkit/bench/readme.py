"""The README written at the root of every generated world.

Why: a world folder is often copied around on its own (to a GPU box, into a bug report); it should
say what each folder is and which parts extend the released MLLMU-Bench, without the source at hand.
The text depends only on the world's parameters, so it keeps the world byte-deterministic.
"""

from __future__ import annotations

from typing import Any

_TEXT = """\
# Synthetic MLLMU-Bench world (steerkit.bench, layout version {version})

Seed {seed}: {n_profiles} fictitious people (IDs {first_id}..), {n_celebrities} "celebrities"
(IDs C001..). Regenerate byte-identically (same seed and parameters, see world.json) with
`python -m steerkit.bench OUT --seed {seed} --profiles {n_profiles} --celebrities {n_celebrities}`.
Read it with `steerkit.data.mllmu` (`eval_items`, `train_pairs`) and
`steerkit.data.contrast.read_contrast_jsonl`.

## MLLMU-Bench configs (released layout; each folder holds train-*-of-*.parquet)
| folder | rows | content |
|---|---|---|
{table}

Task columns are nested parquet structs/lists; `biography` and `metadata` are JSON strings; images
are `{{bytes, path}}` PNG structs (32x32). Forget splits are {nesting}.

## steerkit extensions
- `ft_Data`/`ft_Extra` `metadata` entries carry a `Type` key: `Image_Textual` pairs are trained
  with the row's image, `Pure_Text` pairs without any image. `Question` is the fully formatted
  prompt (steerkit.data.prompts), identical to the evaluation prompt of the same question.
- `Val_Set`: same IDs and schema as `Test_Set`, other paraphrases and transforms (choose steering
  strengths here, never on Test_Set).
- `ft_Extra`: celebrity facts, private-field refusals for every person, and harmful/benign
  pictogram requests (the same request text; only the image says whether to refuse).
- `Refusal_Set`: one formatted prompt per row (`Prompt`, `Ground_Truth`, `Type`, `Category` in
  private/harmful/benign, `Should_Refuse`).
- `contrast/*.jsonl`: `{{"id", "image" (relative to the file, or null), "prompt", "target"}}`;
  `recall`/`erasure` (harmful requests: compliance vs refusal targets, same clean images),
  `forget_N_answer` (forget people's Full_Set questions, true answers) and `forget_N_refuse`
  (their private-field questions, refusal targets).
"""

_DESCRIPTIONS = {
    "Full_Set": "all fictitious people, original portrait, 3 task columns",
    "Test_Set": "same IDs, `images` list of transformed portraits, paraphrased questions",
    "Retain_Set": "utility people (stand-ins for real celebrities), disjoint IDs",
    "ft_Data": "training pairs of the fictitious people (image + JSON `metadata`)",
    "Val_Set": "steerkit extra: another paraphrase/transform set",
    "ft_Extra": "steerkit extra: celebrity, refusal and pictogram training pairs",
    "Refusal_Set": "steerkit extra: refusal eval rows",
}


def world_readme(manifest: dict[str, Any]) -> str:
    """Render the README for a world described by its ``world.json`` manifest."""
    lines = []
    for name, n in manifest["rows"].items():
        if name.startswith("forget_"):
            desc = f"forget {name[7:]} % of the people"
        elif name.startswith("retain_"):
            desc = f"the complement of forget_{100 - int(name[7:])}"
        else:
            desc = _DESCRIPTIONS.get(name, "")
        lines.append(f"| `{name}` | {n} | {desc} |")
    return _TEXT.format(
        version=manifest["layout_version"], seed=manifest["seed"],
        n_profiles=manifest["n_profiles"], n_celebrities=manifest["n_celebrities"],
        first_id=str(1).zfill(max(3, len(str(manifest["n_profiles"])))),
        table="\n".join(lines),
        nesting="nested (forget_5 within forget_10 ...)" if manifest["params"]["nested"]
        else "independent draws per ratio, as in the released data",
    )  # fmt: skip
