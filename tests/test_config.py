import pytest
import yaml
from pydantic import ValidationError

from segrec.jobs.config import Config, Evaluate, config_from_dict, load_config
from segrec.jobs.errors import ConfigError

MINIMAL = {
    "inputs": {
        "items": {"path": "items.parquet", "columns": {"id": "item_id", "text": ["title"]}},
        "interactions": {"path": "events.csv", "format": "csv", "columns": {"user_id": "u", "item_id": "i"}},
    }
}


def write(tmp_path, data):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_local_default_config_loads_with_typed_values():
    config = load_config("conf/local.yaml")
    assert isinstance(config, Config)
    assert config.spark.master == "local[*,2]"
    assert config.inputs.items.columns.text == ["title", "year", "genres"]
    assert config.inputs.interactions.columns.rating == "rating"
    assert config.demo.dataset == "movielens100k"
    assert config.embed.token_budget == "auto"


def test_misspelt_key_is_named_with_a_suggestion(tmp_path):
    data = {**MINIMAL, "embd": {"token_budget": 10}}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    message = str(err.value)
    assert "embd: unknown key" in message and "did you mean 'embed'" in message


def test_misspelt_nested_key_lists_allowed_keys(tmp_path):
    data = {**MINIMAL, "model": {"pooling": "mean", "max_lenght": 128}}
    with pytest.raises(ConfigError, match=r"model\.max_lenght: unknown key .*max_length"):
        load_config(write(tmp_path, data))


def test_wrong_type_and_out_of_range_name_key_and_value():
    with pytest.raises(ConfigError, match=r"embed\.token_budget: .*greater than or equal to 64 \(got 3\)"):
        config_from_dict(MINIMAL, ["embed.token_budget=3"])
    with pytest.raises(ConfigError, match=r"embed\.batch_rows: .*integer.*\(got 'lots'\)"):
        config_from_dict(MINIMAL, ["embed.batch_rows=lots"])
    with pytest.raises(ConfigError, match=r"model\.pooling: Input should be 'mean' or 'cls' \(got 'max'\)"):
        config_from_dict(MINIMAL, ["model.pooling=max"])


def test_cross_field_rule_is_checked():
    with pytest.raises(ConfigError, match="chunk_overlap"):
        config_from_dict(MINIMAL, ["model.max_length=32", "model.chunk_overlap=31"])


def test_source_needs_exactly_one_location():
    data = {"inputs": {**MINIMAL["inputs"], "users": {"path": "u", "table": "db.users", "columns": {"id": "id"}}}}
    with pytest.raises(ConfigError, match=r"inputs\.users: .*exactly one of 'path' or 'table'"):
        config_from_dict(data)


def test_missing_required_section():
    with pytest.raises(ConfigError, match="inputs: required key is missing"):
        config_from_dict({})


def test_overrides_are_typed_and_reach_nested_and_free_form_keys():
    config = config_from_dict(
        MINIMAL,
        [
            "embed.batch_rows=512",
            "embed.incremental=false",
            "spark.conf.spark.sql.shuffle.partitions=8",
            "inputs.interactions.options.header=true",
            "run.name=nightly",
        ],
    )
    assert config.embed.batch_rows == 512
    assert config.embed.incremental is False
    assert config.spark.conf == {"spark.sql.shuffle.partitions": "8"}
    assert config.inputs.interactions.options == {"header": "true"}
    assert config.run.name == "nightly"


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        config_from_dict(MINIMAL, ["embed.batch_rows"])
    with pytest.raises(ConfigError, match="'run.name' is a value, not a section"):
        config_from_dict(MINIMAL, ["run.name=a", "run.name.x=1"])


def test_env_interpolation_with_default_and_missing(monkeypatch):
    monkeypatch.setenv("SEGREC_T_DIR", "/data/warehouse")
    data = {"inputs": {**MINIMAL["inputs"]}, "output": {"path": "${SEGREC_T_DIR}/out"}}
    data["inputs"]["items"] = {**MINIMAL["inputs"]["items"], "path": "${SEGREC_T_NOPE:-/tmp/x}/items"}
    config = config_from_dict(data)
    assert config.output.path == "/data/warehouse/out"
    assert config.inputs.items.path == "/tmp/x/items"
    monkeypatch.delenv("SEGREC_T_DIR")
    with pytest.raises(ConfigError, match=r"output\.path: environment variable \$\{SEGREC_T_DIR\} is not set"):
        config_from_dict(data)


def test_secrets_never_reach_the_redacted_config(monkeypatch):
    monkeypatch.setenv("S3_SECRET_KEY", "hunter2")
    monkeypatch.setenv("DB_PASSWORD", "pw")
    data = {
        **MINIMAL,
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "${S3_SECRET_KEY}", "spark.x.user": "${DB_PASSWORD}"}},
    }
    config = config_from_dict(data)
    assert config.spark.conf["spark.hadoop.fs.s3a.secret.key"] == "hunter2"  # the run gets the value
    dumped = str(config.redacted())
    assert "hunter2" not in dumped and "'pw'" not in dumped
    assert config.redacted()["spark"]["conf"]["spark.x.user"] == "***redacted***"


def test_yaml_is_never_evaluated(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("inputs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_secrets_are_matched_by_name_and_value_not_by_any_word():
    from segrec.jobs.config import redact

    shown = redact(
        {
            "embed": {"token_budget": 16384},
            "spark": {
                "conf": {
                    "spark.hadoop.fs.s3a.access.key": "AKIAABCDEFGHIJKLMNOP",
                    "spark.app.note": "ghp_" + "a" * 36,
                    "spark.jdbc.url": "postgresql://etl:hunter2@db:5432/wh",
                    "spark.sql.shuffle.partitions": "64",
                }
            },
        }
    )
    assert shown["embed"]["token_budget"] == 16384
    conf = shown["spark"]["conf"]
    assert conf["spark.hadoop.fs.s3a.access.key"] == "***redacted***"
    assert conf["spark.app.note"] == "***redacted***"  # a GitHub token under an innocent key
    assert conf["spark.jdbc.url"] == "postgresql://etl:***@db:5432/wh"
    assert conf["spark.sql.shuffle.partitions"] == "64"


def test_a_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    import time

    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")  # 9^9 leaves once expanded, 1 KB on disk
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb") as caught:
        load_config(path)
    assert time.perf_counter() - started < 5 and len(str(caught.value)) < 500


def test_a_mistake_given_with_set_is_attributed_to_set():
    with pytest.raises(ConfigError, match=r"recommend\.k: .*\(got -1\) \[given with --set recommend\.k\]"):
        config_from_dict(MINIMAL, ["recommend.k=-1"])


def test_a_user_sample_is_a_share_below_one_or_a_whole_count():
    assert Evaluate(sample_users=0.1).sample_users == 0.1 and Evaluate(sample_users=5000).sample_users == 5000
    with pytest.raises(ValidationError, match="whole number"):
        Evaluate(sample_users=12.5)
    with pytest.raises(ValidationError):
        Evaluate(sample_users=0)


def test_master_and_remote_are_exclusive_and_remote_comes_from_the_environment(monkeypatch):
    from segrec.jobs.session import remote_of

    base = {
        "inputs": {
            "items": {"path": "i", "columns": {"id": "id"}},
            "interactions": {"path": "x", "columns": {"user_id": "u", "item_id": "i"}},
        }
    }
    with pytest.raises(ConfigError, match="not both"):
        config_from_dict({**base, "spark": {"master": "local[2]", "remote": "sc://host:15002"}})
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    assert remote_of(config_from_dict(base)) is None
    assert remote_of(config_from_dict({**base, "spark": {"remote": "sc://a:15002"}})) == "sc://a:15002"
    monkeypatch.setenv("SPARK_REMOTE", "sc://env:15002")
    assert remote_of(config_from_dict(base)) == "sc://env:15002"


def test_the_old_evaluate_mlflow_keys_are_named_as_unknown():
    base = {
        "inputs": {
            "items": {"path": "i", "columns": {"id": "id"}},
            "interactions": {"path": "x", "columns": {"user_id": "u", "item_id": "i"}},
        }
    }
    with pytest.raises(ConfigError, match="evaluate.mlflow_tracking_uri: unknown key"):
        config_from_dict({**base, "evaluate": {"mlflow_tracking_uri": "file:/tmp/x"}})
    assert config_from_dict({**base, "mlflow": {"tracking_uri": "file:/tmp/x"}}).mlflow.tracking_uri == "file:/tmp/x"
