import pandas as pd
import pytest

from llmrec.data.schema import validate_interactions, validate_items
from llmrec.errors import DataValidationError


def _frame(**cols: list) -> pd.DataFrame:
    base = {"user_id": ["1", "2"], "item_id": ["a", "b"], "timestamp": [100, 200]}
    base.update(cols)
    return pd.DataFrame(base)


def test_valid_frame_is_normalised_to_canonical_columns() -> None:
    out = validate_interactions(_frame(user_id=[1, 2], timestamp=["2018-09-24T10:00:00Z", 5]))
    assert list(out.columns) == ["user_id", "item_id", "timestamp", "value", "event"]
    assert list(out["user_id"]) == ["1", "2"]
    assert out["timestamp"].tolist() == [1537783200, 5]
    assert out["value"].tolist() == [1.0, 1.0] and out["event"].tolist() == ["interaction"] * 2


@pytest.mark.parametrize(
    ("frame", "line", "field", "fix"),
    [
        (_frame(user_id=["1", ""]), 3, "user_id", "non-empty"),
        (_frame(timestamp=[100, "yesterday"]), 3, "timestamp", "ISO-8601"),
        (_frame(timestamp=[-5, 100]), 2, "timestamp", "seconds"),
        (_frame(timestamp=[100, 10**19]), 3, "timestamp", "seconds"),
        (_frame(value=["4.0", "four"]), 3, "value", "finite number"),
        (_frame(user_id=["1", "1"], item_id=["a", "a"], timestamp=[7, 7]), 3, "user_id,item_id,timestamp", "remove"),
    ],
)
def test_bad_rows_name_line_field_and_fix(frame: pd.DataFrame, line: int, field: str, fix: str) -> None:
    with pytest.raises(DataValidationError) as err:
        validate_interactions(frame, "ratings.csv")
    problem = err.value.first
    assert (problem.source, problem.line, problem.field) == ("ratings.csv", line, field)
    assert fix in problem.fix
    assert f"ratings.csv, line {line}, field '{field}'" in str(err.value)


def test_out_of_range_and_missing_columns() -> None:
    with pytest.raises(DataValidationError, match=r"line 3, field 'value': 7.0 is outside \[0.5, 5.0\]"):
        validate_interactions(_frame(value=[1.0, 7.0]), "r.csv", value_range=(0.5, 5.0))
    with pytest.raises(
        DataValidationError, match="required column .timestamp. is missing.*timestamp=YourColumn in the column"
    ):
        validate_interactions(pd.DataFrame({"user_id": [1], "item_id": [2]}), "r.csv")


def test_all_problems_are_collected_not_just_the_first() -> None:
    frame = _frame(user_id=["", ""], value=["x", "y"])
    with pytest.raises(DataValidationError) as err:
        validate_interactions(frame)
    assert len(err.value.problems) == 4


def test_items_need_unique_ids() -> None:
    with pytest.raises(DataValidationError, match="line 3, field 'item_id': duplicate id 'a'"):
        validate_items(pd.DataFrame({"item_id": ["a", "a"], "title": ["x", "y"]}), "items.csv")
    out = validate_items(pd.DataFrame({"item_id": [1.0, 2.0], "genres": ["x", None]}))
    assert list(out["item_id"]) == ["1", "2"] and list(out.columns[:3]) == ["item_id", "title", "text"]


def test_messages_show_values_as_written() -> None:
    with pytest.raises(DataValidationError, match=r"line 2, field 'timestamp': timestamp -5 is out of range"):
        validate_interactions(_frame(timestamp=[-5, 100]))
    out = validate_interactions(_frame(timestamp=[1.9, 2.0]))
    assert out["timestamp"].tolist() == [1, 2]  # fractions of a second are floored
