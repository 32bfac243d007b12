"""The WebSocket side of the wire protocol: envelope, error frames, capacity, close codes."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stratagem.server.sessions import Limits
from tests.conftest import health_ok


def ws(url: str):
    return connect(url.replace("http://", "ws://") + "/ws", open_timeout=10)


def call(conn, message) -> dict:
    conn.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(conn.recv(timeout=10))


def closed_code(conn) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        conn.recv(timeout=10)
    return info.value.rcvd.code if info.value.rcvd else None


def test_a_whole_episode(url_2048):
    with ws(url_2048) as conn:
        reply = call(conn, {"type": "reset", "data": {"seed": 7, "episode_id": "ep-42"}})
        assert reply["type"] == "observation"
        assert set(reply["data"]) == {"observation", "reward", "done", "metadata"}
        data, steps = reply["data"], 0
        while not data["done"]:
            reply = call(conn, {"type": "step", "data": {"action_id": data["observation"]["legal_actions"][0]}})
            assert reply["type"] == "observation"
            data, steps = reply["data"], steps + 1
        state = call(conn, {"type": "state"})
        assert state == {"type": "state", "data": {**state["data"], "episode_id": "ep-42", "step_count": steps}}
        conn.send(json.dumps({"type": "close"}))
        assert closed_code(conn) == 1000


@pytest.mark.parametrize(
    ("message", "code", "needle"),
    [
        ("{not json", "INVALID_JSON", "Invalid JSON"),
        ("[1, 2]", "VALIDATION_ERROR", "JSON object with a string 'type'"),
        ({"type": "dance"}, "UNKNOWN_TYPE", "Unknown message type: 'dance'"),
        ({"type": "step"}, "VALIDATION_ERROR", "'data' of a 'step' message must be a JSON object"),
        ({"type": "step", "data": {"action_id": 9}}, "VALIDATION_ERROR", "less than or equal to 3"),
        ({"type": "step", "data": {"action_id": 0, "x": 1}}, "VALIDATION_ERROR", "Extra inputs are not permitted"),
        ({"type": "reset", "data": {"seed": -3}}, "VALIDATION_ERROR", "greater than or equal to 0"),
        ({"type": "reset", "data": {"colour": 1}}, "VALIDATION_ERROR", "unknown reset parameter(s) ['colour']"),
        ({"type": "state", "data": {}}, "VALIDATION_ERROR", "unexpected key(s) ['data']"),
        ({"type": "step", "data": {"action_id": 0}}, "EXECUTION_ERROR", "call reset first (a reconnected client"),
    ],
)
def test_error_frames_leave_the_connection_open(url_2048, message, code, needle):
    with ws(url_2048) as conn:
        reply = call(conn, message)
        assert reply["type"] == "error" and reply["data"]["code"] == code
        assert needle in reply["data"]["message"]
        assert call(conn, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"


def test_illegal_move_is_an_execution_error_and_the_episode_is_unharmed(url_2048):
    with ws(url_2048) as conn:
        data = call(conn, {"type": "reset", "data": {"seed": 0}})["data"]
        while len(data["observation"]["legal_actions"]) == 4:
            data = call(conn, {"type": "step", "data": {"action_id": data["observation"]["legal_actions"][0]}})["data"]
        before = call(conn, {"type": "state"})["data"]
        illegal = next(a for a in range(4) if a not in data["observation"]["legal_actions"])
        reply = call(conn, {"type": "step", "data": {"action_id": illegal}})
        assert reply["data"]["code"] == "EXECUTION_ERROR" and reply["data"]["status"] == 422
        assert "does not move any tile" in reply["data"]["message"]
        assert call(conn, {"type": "state"})["data"] == before


def test_mcp_over_ws(url_2048):
    with ws(url_2048) as conn:
        reply = call(conn, {"type": "mcp", "data": {"jsonrpc": "2.0", "method": "tools/list", "id": 5}})
        assert reply["type"] == "mcp" and reply["data"]["id"] == 5
        assert [t["name"] for t in reply["data"]["result"]["tools"]] == ["reset", "step", "state"]


def test_capacity_reached_frame_then_close_1000(serve):
    with serve(limits=Limits(max_sessions=1)) as url, ws(url) as first:
        assert call(first, {"type": "reset", "data": {}})["type"] == "observation"
        with ws(url) as second:
            frame = json.loads(second.recv(timeout=10))
            assert frame["type"] == "error" and frame["data"]["code"] == "CAPACITY_REACHED"
            assert frame["data"]["active_sessions"] == 1 and frame["data"]["max_sessions"] == 1
            assert closed_code(second) == 1000
        assert call(first, {"type": "state"})["type"] == "state"  # the first session is unharmed
    with serve(limits=Limits(max_sessions=1)) as url:
        with ws(url) as conn:
            call(conn, {"type": "state"})
        with ws(url) as conn:  # the slot is free again after a disconnect
            assert call(conn, {"type": "reset", "data": {}})["type"] == "observation"


def test_idle_connection_is_reaped_with_a_session_error(serve):
    with serve(limits=Limits(session_timeout_s=0.3)) as url, ws(url) as conn:
        frame = json.loads(conn.recv(timeout=10))
        assert frame["data"]["code"] == "SESSION_ERROR" and "idle" in frame["data"]["message"]
        assert "reset to start again" in frame["data"]["message"]
        assert closed_code(conn) == 1000


def test_oversized_message_closes_only_that_connection(serve):
    with serve(limits=Limits(max_body_bytes=2000)) as url:
        with ws(url) as good, ws(url) as bad:
            call(good, {"type": "reset", "data": {"seed": 1}})
            bad.send(json.dumps({"type": "reset", "data": {"episode_id": "x" * 5000}}))
            assert closed_code(bad) == 1009  # message too big
            assert call(good, {"type": "state"})["type"] == "state"
        assert health_ok(url)


def test_inline_deadline_over_ws(serve, toy_manifest):
    with serve(str(toy_manifest.parent / "spin.yaml"), limits=Limits(step_timeout_s=0.3)) as url, ws(url) as conn:
        call(conn, {"type": "reset", "data": {}})
        reply = call(conn, {"type": "step", "data": {"spin": True}})
        assert reply["data"]["code"] == "EXECUTION_ERROR" and reply["data"]["status"] == 504
        assert call(conn, {"type": "step", "data": {"add": 1}})["data"]["status"] == 409
        assert call(conn, {"type": "reset", "data": {}})["type"] == "observation"
        assert call(conn, {"type": "step", "data": {"add": 1}})["data"]["observation"]["count"] == 1


def test_a_buggy_environment_is_an_execution_error(serve, toy_manifest):
    with serve(str(toy_manifest)) as url, ws(url) as conn:
        call(conn, {"type": "reset", "data": {}})
        reply = call(conn, {"type": "step", "data": {"crash": True}})
        assert reply["data"]["code"] == "EXECUTION_ERROR" and reply["data"]["status"] == 500
        assert "ZeroDivisionError" in reply["data"]["message"]
        assert call(conn, {"type": "step", "data": {"add": 1}})["data"]["observation"]["count"] == 1
