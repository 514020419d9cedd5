"""Prompt templates and where each one's answer is read from."""

from grit_ray.config import PromptTemplate
from grit_ray.grit.prompts import BOXES_FIRST_SUFFIX, plain_reply_answer, user_text


def test_each_template_reads_its_answer_where_its_replies_put_it():
    assert plain_reply_answer("Yes", PromptTemplate.DIRECT) == "Yes"
    chain = "The red circle is at [1, 2, 3, 4]. The blue square is at [5, 6, 7, 8]. So: No"
    assert plain_reply_answer(chain, PromptTemplate.BOXES_FIRST).strip() == "No"
    assert plain_reply_answer("So: maybe. So: 3", PromptTemplate.BOXES_FIRST).strip() == "3"  # the last one
    assert plain_reply_answer("no marker", PromptTemplate.BOXES_FIRST) == "no marker"
    assert plain_reply_answer("<answer> 3", PromptTemplate.GRIT) is None  # read after <answer>
    assert user_text("Count the circles.", PromptTemplate.BOXES_FIRST) == "\nQuestion: Count the circles." + BOXES_FIRST_SUFFIX
