"""How the corpus in recipes/ was made: each file is ``00_valid_base.yaml`` with one mistake.

The committed files are the corpus (golden.yaml's line numbers refer to them); this script documents
them and rebuilds them byte for byte: ``python tests/hostile/make_corpus.py``. To add a case, add a line
here, run it, then add the file's entry to golden.yaml. Not a test module (pytest does not collect it).
"""
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "recipes"

BASE = """\
schema_version: 1
name: hostile-base
description: the valid recipe every hostile file is derived from
model:
  id: embedded:llava
  adapter: llava
direction:
  method: mean_diff
  recall:
    source: {kind: jsonl, path: data/recall.jsonl}
  erasure:
    source: {kind: jsonl, path: data/erasure.jsonl}
gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: data/mllmu, split: forget}]
  retain: [{kind: world, split: retain}]
  layer: 1
steer:
  op: add
  site: resid_pre
  layers: {start: 1}
  positions: [all_prompt]
  strength: {lambda: -1.0}
bundle: {path: out/not-extracted-yet.safetensors}
eval:
  batch_size: 8
"""

def v(*pairs):
    text = BASE
    for old, new in zip(pairs[::2], pairs[1::2]):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text

C = {}
C["00_valid_base.yaml"] = BASE
# ---- wrong types
C["type_name_int.yaml"] = v("name: hostile-base", "name: 123")
C["type_name_date.yaml"] = v("name: hostile-base", "name: 2024-01-01")
C["type_name_bad_chars.yaml"] = v("name: hostile-base", "name: ../../etc/evil")
C["type_lambda_word.yaml"] = v("{lambda: -1.0}", "{lambda: strong}")
C["type_layers_string.yaml"] = v("layers: {start: 1}", 'layers: "1-3"')
C["type_positions_scalar.yaml"] = v("positions: [all_prompt]", "positions: all_prompt")
C["type_model_scalar.yaml"] = v("model:\n  id: embedded:llava\n  adapter: llava\n", "model: embedded:llava\n")
C["type_trust_remote_code_word.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: maybe\n")
C["type_limit_fraction.yaml"] = v("path: data/recall.jsonl}", "path: data/recall.jsonl, limit: 2.5}")
C["type_clip_three.yaml"] = v("  layer: 1\n", "  layer: 1\n  clip: [0.0, 0.5, 1.0]\n")
C["type_clip_reversed.yaml"] = v("  layer: 1\n", "  layer: 1\n  clip: [1.0, 0.0]\n")
C["type_schema_version_2.yaml"] = v("schema_version: 1", "schema_version: 2")
C["type_gate_forget_mapping.yaml"] = v("forget: [{kind: mllmu, path: data/mllmu, split: forget}]",
                                       "forget: {kind: mllmu, path: data/mllmu, split: forget}")
C["type_skip_strings.yaml"] = v("layers: {start: 1}", "layers: {start: 1, skip: [two]}")
C["type_strength_scalar.yaml"] = v("strength: {lambda: -1.0}", "strength: -1.0")
C["type_layer_start_float.yaml"] = v("layers: {start: 1}", "layers: {start: 1.5}")
C["type_gate_scalar.yaml"] = v("""gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: data/mllmu, split: forget}]
  retain: [{kind: world, split: retain}]
  layer: 1
""", "gate: always_on\n")
C["type_dtype_choice.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  dtype: float64\n")
# ---- unknown keys, near misses
C["unknown_top_stear.yaml"] = v("steer:\n", "stear:\n")
C["unknown_steer_layer.yaml"] = v("layers: {start: 1}", "layer: {start: 1}")
C["unknown_strenght.yaml"] = v("strength: {lambda", "strenght: {lambda")
C["unknown_lamda.yaml"] = v("{lambda: -1.0}", "{lamda: -1.0}")
C["unknown_gate_rule.yaml"] = v("rule: ridge_linear", "rule: ridge_liner")
C["unknown_site.yaml"] = v("site: resid_pre", "site: resid_pr")
C["unknown_source_kind.yaml"] = v("{kind: jsonl, path: data/erasure.jsonl}", "{kind: jsonlines, path: data/erasure.jsonl}")
C["unknown_method.yaml"] = v("method: mean_diff", "method: meandiff")
C["unknown_position.yaml"] = v("positions: [all_prompt]", "positions: [last_token]")
C["unknown_world_key.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  world: {n_profile: 50}\n")
C["unknown_op.yaml"] = v("op: add", "op: subtract")
C["unknown_gate_retian.yaml"] = v("  retain: [{kind: world, split: retain}]", "  retian: [{kind: world, split: retain}]")
C["missing_source_kind.yaml"] = v("{kind: jsonl, path: data/recall.jsonl}", "{path: data/recall.jsonl}")
# ---- duplicate keys
C["dup_top_steer.yaml"] = BASE + "steer:\n  layers: [0]\n"
C["dup_nested_lambda.yaml"] = v("{lambda: -1.0}", "{lambda: -1.0, lambda: 5.0}")
C["dup_quoted_name.yaml"] = v("name: hostile-base\n", "name: hostile-base\n\"name\": other\n")
# ---- layers
C["layers_start_past_end.yaml"] = v("layers: {start: 1}", "layers: {start: 7}")
C["layers_stop_past_end.yaml"] = v("layers: {start: 1}", "layers: {start: 1, stop: 9}")
C["layers_list_past_end.yaml"] = v("layers: {start: 1}", "layers: [1, 4]")
C["layers_negative_too_far.yaml"] = v("layers: {start: 1}", "layers: [-5]")
C["layers_empty_range.yaml"] = v("layers: {start: 1}", "layers: {start: 2, stop: 2}")
C["layers_all_skipped.yaml"] = v("layers: {start: 1}", "layers: {start: 2, stop: 4, skip: [2, 3]}")
C["layers_empty_list.yaml"] = v("layers: {start: 1}", "layers: []")
C["layers_huge_stop.yaml"] = v("layers: {start: 1}", "layers: {start: 1, stop: 1000000000000000000000000000000}")
C["layers_huge_negative_start.yaml"] = v("layers: {start: 1}", "layers: {start: -1000000000000000000000000000000}")
C["layers_gate_after_write.yaml"] = v("  layer: 1\n", "  layer: 3\n")
C["layers_gate_out_of_range.yaml"] = v("  layer: 1\n", "  layer: 12\n")
# ---- missing required
C["missing_model.yaml"] = v("model:\n  id: embedded:llava\n  adapter: llava\n", "")
C["missing_steer.yaml"] = v("""steer:
  op: add
  site: resid_pre
  layers: {start: 1}
  positions: [all_prompt]
  strength: {lambda: -1.0}
""", "")
C["missing_layers.yaml"] = v("  layers: {start: 1}\n", "")
C["missing_name.yaml"] = v("name: hostile-base\n", "")
C["missing_model_id.yaml"] = v("  id: embedded:llava\n", "")
C["missing_direction_and_bundle.yaml"] = v("bundle: {path: out/not-extracted-yet.safetensors}\n", "",
    """direction:
  method: mean_diff
  recall:
    source: {kind: jsonl, path: data/recall.jsonl}
  erasure:
    source: {kind: jsonl, path: data/erasure.jsonl}
""", "")
C["missing_source_path.yaml"] = v("{kind: jsonl, path: data/recall.jsonl}", "{kind: jsonl}")
C["missing_world_split.yaml"] = v("retain: [{kind: world, split: retain}]", "retain: [{kind: world}]")
C["missing_gate_retain.yaml"] = v("  retain: [{kind: world, split: retain}]\n", "")
# ---- data paths
C["path_missing_jsonl.yaml"] = v("path: data/erasure.jsonl", "path: data/no-such-file.jsonl")
C["path_missing_mllmu.yaml"] = v("path: data/mllmu", "path: data/no-such-folder")
C["path_jsonl_is_folder.yaml"] = v("path: data/recall.jsonl", "path: data/mllmu")
C["path_mllmu_is_file.yaml"] = v("path: data/mllmu", "path: data/recall.jsonl")
C["path_bundle_corrupt.yaml"] = v("out/not-extracted-yet.safetensors", "data/corrupt.safetensors")
C["path_bundle_is_folder.yaml"] = v("out/not-extracted-yet.safetensors", "data/mllmu")
C["path_model_config_not_json.yaml"] = v("id: embedded:llava\n  adapter: llava", "id: data/model_bad_config")
C["path_model_config_bad_dims.yaml"] = v("id: embedded:llava\n  adapter: llava", "id: data/model_bad_dims")
# ---- adapter
C["adapter_typo.yaml"] = v("adapter: llava", "adapter: lava")
C["adapter_unknown_embedded.yaml"] = v("id: embedded:llava\n  adapter: llava", "id: embedded:llama3")
C["adapter_text_only_image_positions.yaml"] = v("adapter: llava", "adapter: llama",
                                                "positions: [all_prompt]", "positions: [image_tokens]")
# ---- YAML syntax
C["yaml_bad_indent.yaml"] = v("  site: resid_pre\n", "   site: resid_pre\n")
C["yaml_unclosed_flow.yaml"] = v("layers: {start: 1}", "layers: {start: 1")
C["yaml_tab_indent.yaml"] = v("  op: add\n", "\top: add\n")
C["yaml_unclosed_quote.yaml"] = v("name: hostile-base", 'name: "hostile-base')
C["yaml_two_documents.yaml"] = BASE + "---\nname: second\n"
C["yaml_empty.yaml"] = ""
C["yaml_only_comments.yaml"] = "# nothing here\n# at all\n"
C["yaml_top_list.yaml"] = "- schema_version: 1\n- name: a-list\n"
C["yaml_top_scalar.yaml"] = "just a sentence\n"
C["yaml_top_null.yaml"] = "~\n"
C["yaml_complex_key.yaml"] = v("eval:\n", "? [a, b]\n: 1\neval:\n")
C["yaml_nul_char.yaml"] = v("the valid recipe", "the valid \x00 recipe")
# ---- numbers
C["num_lambda_inf.yaml"] = v("{lambda: -1.0}", "{lambda: .inf}")
C["num_lambda_nan.yaml"] = v("{lambda: -1.0}", "{lambda: .nan}")
C["num_lambda_1e400.yaml"] = v("{lambda: -1.0}", "{lambda: 1.0e+400}")
C["num_lambda_1e400_plain.yaml"] = v("{lambda: -1.0}", "{lambda: 1e400}")
C["num_negative_batch.yaml"] = v("batch_size: 8", "batch_size: -8")
C["num_limit_zero.yaml"] = v("path: data/recall.jsonl}", "path: data/recall.jsonl, limit: 0}")
C["num_huge_profiles.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  world: {n_profiles: 1000000000000000000000000000000}\n")
C["num_holdout_nan.yaml"] = v("  layer: 1\n", "  layer: 1\n  holdout: .nan\n")
C["num_huge_seed.yaml"] = v("eval:\n", "seed: 1000000000000000000000000000000\neval:\n")
C["num_negative_seed.yaml"] = v("eval:\n", "seed: -1\neval:\n")
C["num_pgd_epsilon_inf.yaml"] = v("    source: {kind: jsonl, path: data/recall.jsonl}\n",
    "    source: {kind: jsonl, path: data/recall.jsonl}\n    image_perturbation: {epsilon: .inf}\n")
# ---- tags, aliases, nesting
C["tag_python_apply.yaml"] = v("name: hostile-base", "name: !!python/object/apply:os.system ['touch hostile-pwned']")
C["tag_python_apply_mapping.yaml"] = v("eval:\n", "x: !!python/object/apply:os.system {args: ['touch hostile-pwned']}\neval:\n")
C["tag_python_name.yaml"] = v("description: the valid recipe every hostile file is derived from",
                              "description: !!python/name:os.system")
C["tag_custom_include.yaml"] = v("bundle: {path: out/not-extracted-yet.safetensors}", "bundle: !include other.yaml")
C["tag_set.yaml"] = v("positions: [all_prompt]", "positions: !!set {all_prompt}")
C["merge_key.yaml"] = v("strength: {lambda: -1.0}", "strength: {<<: {lambda: -1.0}}")
laughs = "lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i-1}"] * 9) + "]\n" for i in range(1, 10))
C["bomb_billion_laughs.yaml"] = BASE + laughs
C["bomb_recursive_alias.yaml"] = BASE + "loop: &loop [*loop]\n"
C["bomb_recursive_mapping.yaml"] = BASE + "loop: &loop {again: *loop}\n"
C["deep_flow_nesting.yaml"] = v("description: the valid recipe every hostile file is derived from",
                                "description: " + "[" * 20000 + "]" * 20000)
C["deep_moderate_nesting.yaml"] = v("description: the valid recipe every hostile file is derived from",
                                    "description: " + "[" * 150 + "]" * 150)
C["deep_block_nesting.yaml"] = BASE + "deep:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(400))
C["tag_int_garbage.yaml"] = v("batch_size: 8", "batch_size: !!int eight")
C["tag_bool_garbage.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: !!bool maybe\n")
C["tag_timestamp_garbage.yaml"] = v("name: hostile-base", "name: !!timestamp yesterday")
C["tag_float_garbage.yaml"] = v("{lambda: -1.0}", "{lambda: !!float lots}")
C["tag_binary.yaml"] = v("description: the valid recipe every hostile file is derived from", "description: !!binary aGVsbG8=")
C["num_5000_digits.yaml"] = v("eval:\n", "seed: " + "7" * 5000 + "\neval:\n")
# ---- encodings, binary
C["enc_latin1.yaml"] = v("the valid recipe", "the valid r\xe9cipe").encode("latin-1")
random.seed(6)
C["enc_binary.yaml"] = bytes(random.randrange(256) for _ in range(2048))
C["enc_utf16.yaml"] = BASE.encode("utf-16")
C["enc_png_named_yaml.yaml"] = b"\x89PNG\r\n\x1a\n" + bytes(random.randrange(256) for _ in range(256))
# ---- round 2 (issues #18, #14): string booleans for a security switch, repeated layers, paths no file
# system takes, an unbounded world seed
C["sec_remote_code_quoted_on.yaml"] = v("  adapter: llava\n", '  adapter: llava\n  trust_remote_code: "on"\n')
C["sec_remote_code_bare_on.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: on\n")
C["sec_remote_code_yes.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: yes\n")
C["sec_remote_code_quoted_true.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: 'true'\n")
C["sec_remote_code_one.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: 1\n")
C["sec_remote_code_bool_tag_on.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  trust_remote_code: !!bool on\n")
C["layers_duplicate.yaml"] = v("layers: {start: 1}", "layers: [1, 2, 2]")
C["layers_duplicate_negative.yaml"] = v("layers: {start: 1}", "layers: [1, 3, -1]")
C["num_huge_world_seed.yaml"] = v("  adapter: llava\n", "  adapter: llava\n  world: {seed: 1000000000000000000000}\n")
C["path_bundle_nul.yaml"] = v("out/not-extracted-yet.safetensors", '"out/not\\0extracted.safetensors"')
C["path_bundle_5000_chars.yaml"] = v("out/not-extracted-yet.safetensors", "out/" + "b" * 5000 + ".safetensors")
C["path_bundle_long_name.yaml"] = v("out/not-extracted-yet.safetensors", "out/" + "b" * 300 + ".safetensors")
C["path_model_id_5000_chars.yaml"] = v("id: embedded:llava\n  adapter: llava", "id: " + "m" * 5000)
C["path_jsonl_nul.yaml"] = v("path: data/recall.jsonl}", 'path: "data/recall\\0.jsonl"}')


def write() -> None:
    (ROOT / "data").mkdir(parents=True, exist_ok=True)
    for name, text in C.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (ROOT / name).write_bytes(data)

    # data files the valid base points at
    (ROOT / "data/recall.jsonl").write_text('{"prompt": "Who is this person?", "image": null, "target": "She is Ana."}\n')
    (ROOT / "data/erasure.jsonl").write_text('{"prompt": "Who is this person?", "image": null, "target": "I cannot help."}\n')
    (ROOT / "data/mllmu/forget_10").mkdir(parents=True, exist_ok=True)
    (ROOT / "data/mllmu/README.md").write_text("Stands in for an MLLMU-layout folder; validate only checks it exists "
                                               "and holds the split's config folder with a *.parquet file.\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ID": pa.array([], pa.string())}), ROOT / "data/mllmu/forget_10/stand-in.parquet")
    (ROOT / "data/corrupt.safetensors").write_bytes(bytes(random.randrange(256) for _ in range(512)))
    (ROOT / "data/model_bad_config").mkdir(exist_ok=True)
    (ROOT / "data/model_bad_config/config.json").write_text('{"architectures": ["LlavaForConditionalGeneration"],\n')
    (ROOT / "data/model_bad_dims").mkdir(exist_ok=True)
    (ROOT / "data/model_bad_dims/config.json").write_text(
        '{"architectures": ["LlavaForConditionalGeneration"], "text_config": {"hidden_size": "wide", "num_hidden_layers": 4}}\n')


if __name__ == "__main__":
    write()
    print(len(C) - 1, "hostile files")
