"""score('model', ...) through the engine (docs/models.md): scored by ONNX Runtime in
the executors, clamped to the declared bounds, released only inside aggregates under
a rule that names the model; and what an attacker tries instead is refused."""

from __future__ import annotations

import onnxruntime
import pytest

from tests.modelkit import PEOPLE_SQL, model_entry, np, scored_room, write_classifier, write_regressor
from tests.roomkit import build_engine
from gateway.engine import QueryRequest
from gateway.errors import ExecutionFailed, GatewayError, Refused


def run(engine, sql, user="analyst"):
    return engine.run(QueryRequest(user=user, cleanroom="scored", sql=sql))


def refused(engine, sql, user="analyst") -> Refused:
    with pytest.raises(GatewayError) as info:
        run(engine, sql, user)
    return info.value


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scored")
    sha = write_classifier(folder / "clf.onnx")
    engine = build_engine(folder, scored_room(model_entry("clf.onnx", sha)), PEOPLE_SQL)
    yield engine, folder / "clf.onnx"
    engine.close()


def direct_scores(path, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"X": np.column_stack([a, b]).astype(np.float32)})[0][:, 1]


def people() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.arange(200)
    return ids, (ids % 10) / 10.0, (ids % 7) / 7.0


def test_an_average_score_by_group_is_onnx_runtimes_average(room):
    engine, path = room
    release = run(engine, "SELECT grp, avg(score('m', a, b)) AS s, count(*) AS n FROM people GROUP BY grp ORDER BY grp")
    assert release.authorised_by == "rule:scoring"
    ids, a, b = people()
    expected = direct_scores(path, a, b)
    got = release.table.to_pydict()
    assert got["grp"] == ["g0", "g1", "g2", "g3"] and got["n"] == [50] * 4
    for group, value in zip(range(4), got["s"]):
        assert value == pytest.approx(float(expected[ids % 4 == group].mean()), rel=1e-6)


def test_scores_join_both_sides_and_a_null_input_scores_null(room):
    engine, path = room
    sql = ("SELECT l.label, sum(score('m', p.a, CASE WHEN p.a < 0.05 THEN NULL ELSE p.b END)) AS s, "
           "count(*) AS n FROM people p JOIN labels l ON p.id = l.id GROUP BY l.label ORDER BY l.label")
    got = run(engine, sql).table.to_pydict()
    ids, a, b = people()
    expected = direct_scores(path, a, b)
    for label, value in zip((0, 1), got["s"]):
        chosen = ((ids % 3 == 0) == bool(label)) & (ids % 10 != 0)
        assert value == pytest.approx(float(expected[chosen].sum()), rel=1e-5)


def test_a_score_is_clamped_to_the_declared_bounds(tmp_path):
    sha = write_regressor(tmp_path / "reg.onnx", coefficients=(10.0, 0.0), intercept=0.0)  # 10 * a, a in [0, 0.9]
    entry = model_entry("reg.onnx", sha, output="variable", index=0, bounds=(1, 5))
    engine = build_engine(tmp_path, scored_room(entry), PEOPLE_SQL)
    try:
        total = run(engine, "SELECT sum(score('m', a, b)) AS s FROM people").table.to_pydict()["s"][0]
    finally:
        engine.close()
    _, a, _ = people()
    assert total == pytest.approx(float(np.clip(10 * a, 1, 5).sum()), rel=1e-5)
    assert total != pytest.approx(float((10 * a).sum()), rel=1e-3)


@pytest.mark.parametrize("sql, rule", [
    # one row's score picked out, in every clause but an aggregate's argument
    ("SELECT count(*) FROM people WHERE score('m', a, b) > 0.99", "model.outside_aggregate"),
    ("SELECT score('m', a, b) AS s, count(*) FROM people GROUP BY 1", "model.outside_aggregate"),
    ("SELECT grp, count(*) FROM people GROUP BY grp HAVING min(a) > 0 AND score('m', 0.5, 0.5) > 0",
     "model.outside_aggregate"),
    ("SELECT count(*) FILTER (WHERE score('m', a, b) > 0.9) FROM people", "model.outside_aggregate"),
    ("SELECT grp, count(*) FROM people GROUP BY grp ORDER BY score('m', 0.1, 0.2)", "model.outside_aggregate"),
    # names: exact, declared, and the generated function never callable by its own name
    ("SELECT avg(score('M', a, b)) FROM people", "model.unknown"),
    ("SELECT avg(score('other', a, b)) FROM people", "model.unknown"),
    ("SELECT avg(score(grp, a, b)) FROM people", "model.name"),
    ("SELECT avg(score('m', a)) FROM people", "model.arguments"),
    ("SELECT avg(score('m', a, grp)) FROM people", "model.arguments"),
    ("SELECT avg(score('m', a, secret)) FROM people", "bind.unknown_column"),
    ("SELECT avg(score('m', id, b)) FROM people", "column.join_key_in_aggregate"),
])
def test_what_an_analyst_may_not_do_with_a_score(room, sql, rule):
    engine, _ = room
    assert refused(engine, sql).rule == rule


def test_the_scoring_function_cannot_be_called_by_its_own_name(room):
    engine, _ = room
    function = engine.context.cleanrooms["scored"].models["m"].file.function
    for spelling in (function, function.upper(), f'"{function}"'):
        error = refused(engine, f"SELECT avg({spelling}(a, b)) FROM people")
        assert error.rule == "function.not_allowed", (spelling, error.rule)


def test_another_party_whose_rule_does_not_name_the_model_cannot_score(room):
    engine, _ = room
    error = refused(engine, "SELECT avg(score('m', a, b)) FROM people", user="other")
    assert error.rule == "model.not_allowed" and "rule plain does not allow scoring model m" in error.message


def test_the_model_file_cannot_be_read_as_a_source(room):
    engine, path = room
    for sql in (f"SELECT * FROM read_blob('{path}')", f"SELECT count(*) FROM '{path}'",
                f"SELECT count(*) FROM read_text('{path}')"):
        assert refused(engine, sql).rule in ("source.table_function", "bind.unknown_table"), sql


def test_a_file_changed_after_the_policy_loaded_fails_the_statement_unscored(tmp_path):
    sha = write_classifier(tmp_path / "clf.onnx")
    engine = build_engine(tmp_path, scored_room(model_entry("clf.onnx", sha)), PEOPLE_SQL)
    try:
        write_classifier(tmp_path / "clf.onnx", seed=5)  # the executors load the file when first asked to score
        with pytest.raises(ExecutionFailed):
            run(engine, "SELECT avg(score('m', a, b)) FROM people")
        assert run(engine, "SELECT count(*) AS n FROM people").table.to_pydict() == {"n": [200]}
    finally:
        engine.close()


def test_every_analyst_sees_the_declaration_never_the_file(room):
    engine, path = room
    for user, rules in (("analyst", ["scoring"]), ("other", [])):
        [listed] = engine.models(user, "scored")
        assert listed["name"] == "m" and listed["owner"] == "owner_b" and listed["rules"] == rules
        assert listed["inputs"] == [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]
        assert listed["output"] == {"name": "probabilities", "bounds": [0.0, 1.0]}
        assert listed["call"] == "score('m', a, b)"
        assert str(path) not in repr(listed) and "clf.onnx" not in repr(listed)


def test_the_last_good_policy_finds_its_model_files_where_the_policy_is(tmp_path):
    import yaml

    from gateway.engine import Engine

    sha = write_classifier(tmp_path / "clf.onnx")
    build_engine(tmp_path, scored_room(model_entry("clf.onnx", sha)), PEOPLE_SQL).close()  # its copy is kept
    policy = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    policy["min_group_size"] = 1  # below the schema's minimum: the restart serves the last good copy
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    engine = Engine.from_config_file(tmp_path / "gateway.yaml")
    try:
        assert engine.policy_status()["status"] == "stale"
        assert engine.context.cleanrooms["scored"].models["m"].file.path == str(tmp_path / "clf.onnx")
        assert run(engine, "SELECT avg(score('m', a, b)) AS s FROM people").table.num_rows == 1
    finally:
        engine.close()
