"""A user in several clean rooms picks one in the console: the pages, the
statements and the history follow the room chosen, kept in the server-side session."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.demokit import DEMO_POLICY, write_demo_config

SQL = "SELECT region, COUNT(DISTINCT household_id) AS households FROM purchases GROUP BY region"


@pytest.fixture(scope="module")
def client(demo_data_dir, tmp_path_factory):
    from gateway.engine import Engine
    from gateway.http.app import create_app

    folder = tmp_path_factory.mktemp("console-rooms")
    second = folder / "second.yaml"
    second.write_text(DEMO_POLICY.read_text().replace("cleanroom: demo\n", "cleanroom: second\n", 1))
    config = write_demo_config(folder, demo_data_dir, DEMO_POLICY)
    data = yaml.safe_load(config.read_text())
    data["policies"].append(str(second))
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    from gateway.collab.demo import approve_demo

    approve_demo(config)  # the second room's template and rule too
    app = create_app(lambda: Engine.from_config_file(config))
    with app.test_client() as client:
        page = client.get("/console/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert client.post("/console/login", data={"csrf_token": token, "secret": "analyst"}).status_code == 302
        yield client
    app.extensions["cleanroom_engine"].close()


def shown_room(client) -> tuple[str, str]:
    page = client.get("/console/analyst").text
    return re.search(r'<span id="room">([^<]+)</span>', page).group(1), re.search(r'data-csrf="([^"]+)"', page).group(1)


def test_the_chosen_room_is_the_one_queried_and_remembered(client):
    room, csrf = shown_room(client)
    assert room == "demo"
    page = client.get("/console/analyst").text
    assert re.findall(r"<option(?: selected)?>(\w+)</option>", page.split('id="cleanroom"')[1].split("</select>")[0]) \
        == ["demo", "second"]
    answer = client.post("/console/api/run", json={"sql": SQL}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200
    switched = client.post("/console/cleanroom", data={"csrf_token": csrf, "cleanroom": "second",
                                                      "next_page": "/console/analyst"})
    assert switched.status_code == 302 and switched.headers["Location"] == "/console/analyst"
    assert shown_room(client)[0] == "second"
    assert client.get("/console/api/history").json == {"cleanroom": "second", "history": []}
    assert client.get("/console/api/budget").json["cleanroom"] == "second"
    client.post("/console/api/run", json={"sql": SQL}, headers={"X-CSRF-Token": csrf})
    assert len(client.get("/console/api/history").json["history"]) == 1


def test_a_room_the_user_is_not_in_cannot_be_chosen(client):
    _, csrf = shown_room(client)
    for name in ("nowhere", ""):
        answer = client.post("/console/cleanroom", data={"csrf_token": csrf, "cleanroom": name})
        assert answer.status_code == 400 and "no clean room" in answer.text
    answer = client.post("/console/cleanroom", data={"cleanroom": "second"})  # no CSRF token
    assert answer.status_code == 403 and "console.csrf" in answer.text
