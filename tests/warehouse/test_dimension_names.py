"""The group-by and filter names a user types (`report --group-by`, the API's `group_by`, export, showback): every
mistake named at once, a hostile name shortened, never echoed whole."""

import pytest

from warehouse.backends import WarehouseError
from warehouse.queries import check_dimensions
from warehouse.showback import check_dims


@pytest.mark.parametrize("check", [check_dimensions, check_dims])
def test_every_unknown_name_is_named_not_only_the_first(check):
    """left31: `report --group-by teem,modle` named 'teem' only; fixing it met 'modle' next."""
    with pytest.raises(WarehouseError) as caught:
        check(["teem", "team", "modle"], "group_by")
    message = str(caught.value)
    assert "'teem'" in message and "'modle'" in message and "did you mean 'team'" in message, message
    assert "did you mean 'model'" in message, message


@pytest.mark.parametrize("check", [check_dimensions, check_dims])
def test_a_long_or_repeated_name_is_shortened_in_the_error(check):
    """left31: a doubled 1,000-character tag key was echoed whole (2,000+ characters of the user's text)."""
    long = "tag:" + "k" * 1000 if check is check_dims else "k" * 1000
    for names in ([long, long], ["x" * 1000]):
        with pytest.raises(WarehouseError) as caught:
            check(names, "group_by")
        assert len(str(caught.value)) < 400, len(str(caught.value))


def test_known_names_pass_in_order():
    assert check_dimensions(["model", "team"], "group_by") == ["model", "team"]
    assert check_dims(["tag:env", "team"], "group_by") == ["tag:env", "team"]
    with pytest.raises(WarehouseError, match="needs a tag key"):
        check_dims(["tag:"], "group_by")
    with pytest.raises(WarehouseError, match="listed twice"):
        check_dims(["team", "team"], "group_by")
