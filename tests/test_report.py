"""helpers.report: the text a notebook shows for the trust table."""


def test_interval_table_writes_value_interval_and_n_in_the_column_unit():
    import numpy as np
    import pandas as pd

    from helpers import report

    table = pd.DataFrame(
        {
            "accuracy": [0.5, np.nan],
            "accuracy_ci_low": [0.3, np.nan],
            "accuracy_ci_high": [0.7, np.nan],
            "n_test": [10, 0],
            "median_eps_whole": [2 / 255, np.inf],
            "median_eps_whole_ci_low": [1 / 255, 3 / 255],
            "median_eps_whole_ci_high": [3 / 255, np.inf],
            "n_attacked": [9, 4],
        },
        index=["sea", "street"],
    )
    out = report.interval_table(table, ["accuracy", "median_eps_whole", "absent"], max_eps=16 / 255)
    assert list(out.columns) == ["accuracy", "n_test", "median_eps_whole", "n_attacked"]
    assert out.at["sea", "accuracy"] == "50% [30%, 70%]"
    assert out.at["street", "accuracy"] == "n/d"
    assert out.at["sea", "median_eps_whole"] == "2.00 [1.00, 3.00]"
    assert out.at["street", "median_eps_whole"] == ">16 [3.00, >16]"
    assert out["n_attacked"].tolist() == ["9", "4"]
    ratio = pd.DataFrame(
        {
            "object_background_ratio": [0.0123, np.inf],
            "object_background_ratio_ci_low": [0.01, 0],
            "object_background_ratio_ci_high": [0.5, np.inf],
        },
        index=["sea", "street"],
    )
    out = report.interval_table(ratio, ["object_background_ratio"])
    assert out["object_background_ratio"].tolist() == ["0.012 [0.01, 0.50]", "inf [0, inf]"]
