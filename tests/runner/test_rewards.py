"""Rewards: exact match for reference answers, a graded format reward for synthetic prompts."""

from sgtui.runner.rewards import exact_match, format_reward, reward


def test_exact_match_takes_the_last_number_and_ignores_thousands_commas():
    assert exact_match("so 3 + 4 = 7, the answer is 1,234", "#### 1234") == 1.0
    assert exact_match("the answer is 12", "#### 1234") == 0.0
    assert exact_match("no number here", "#### 5") == 0.0
    assert reward("it is 5", "#### 5") == 1.0  # a reference picks exact match


def test_format_reward_grades_text_and_varies_across_garbage():
    assert format_reward("") == 0.0
    assert format_reward("the cat sat on a mat") == 1.0
    assert format_reward("the the the the") == 0.25  # repetitive
    assert 0.0 < format_reward("a1$% b2&* c3@!") < 0.5  # mostly symbols
    # What a random-weight model emits: the reward must differ between samples, or GRPO's
    # group-normalized advantages are all zero and training has nothing to follow.
    samples = ["xq$#b", "hello wor!d", "zz zz", "##", "ab cd ef"]
    assert len({round(format_reward(s), 6) for s in samples}) == len(samples)
    assert reward("ab cd", "") == format_reward("ab cd")
