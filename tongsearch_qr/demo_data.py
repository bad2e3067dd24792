"""The demo collection: Python's own documentation topics and questions that need reasoning to match them.

The corpus is ``pydoc_data.topics`` (the language reference sections ``help()`` shows), shipped with
every Python. The questions describe a situation instead of naming the feature, as BRIGHT's do;
each lists the topics that answer it.
"""

from __future__ import annotations

DEMO_QUESTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "q01",
        "I append to a list inside a function and the caller sees the change, but `count = count + 1` on an "
        "integer defined at module level makes the function crash before the line even runs. Why?",
        ("naming", "global"),
    ),
    (
        "q02",
        "My class instances should show something readable when printed in the console and two instances with "
        "the same fields should be equal. Which methods do I have to write?",
        ("customization",),
    ),
    (
        "q03",
        "How can I build my own container so that len(box), box[2] and `for item in box` all work on it?",
        ("sequence-types",),
    ),
    (
        "q04",
        "I want a file to be closed for sure even if an error happens halfway through processing it. What does an "
        "object need to provide so that cleanup happens automatically at the end of a block?",
        ("with", "context-managers"),
    ),
    (
        "q05",
        "Why does `a = [1, 2]; b = a; b += [3]` change a as well, while doing the same thing with tuples leaves a untouched?",
        ("augassign", "typesseq-mutable"),
    ),
    (
        "q06",
        "A function should hand back values one at a time, pausing in between, instead of building a whole list "
        "in memory first. How is that written?",
        ("yield",),
    ),
    (
        "q07",
        "A helper defined inside another function needs to update a counter that belongs to the outer function, "
        "not to the module. How?",
        ("nonlocal",),
    ),
    (
        "q08",
        "I only want to run some code if my search loop went through every element without finding the item and "
        "stopping early. Is there syntax for that?",
        ("for", "while", "break"),
    ),
    (
        "q09",
        "How can an object be used like a function, so that writing counter() on an instance increments it?",
        ("specialnames", "callable-types"),
    ),
    ("q10", "Which values make an if statement skip its block, besides the constant False itself?", ("truth",)),
    (
        "q11",
        "How do I show a number padded with zeros to 8 characters with exactly two digits after the decimal "
        "point when building a message?",
        ("formatstrings",),
    ),
    (
        "q12",
        "When I catch one error and signal a different one, the traceback says 'During handling of the above "
        "exception, another exception occurred'. How do I link the two errors on purpose or hide the first?",
        ("raise",),
    ),
    (
        "q13",
        "How do I write a function that accepts any number of named options, some with default values, and can "
        "be called with a dictionary of settings?",
        ("function", "calls"),
    ),
    (
        "q14",
        "In an expression like a < b < c, is the middle value evaluated twice, and what does it mean exactly?",
        ("comparisons",),
    ),
    (
        "q15",
        "How do I write a routine that can pause while it waits for the network and let other tasks run in the "
        "meantime on the same thread?",
        ("async", "await"),
    ),
    (
        "q16",
        "How can I make reading any missing attribute on my object return a default instead of raising an error?",
        ("attribute-access",),
    ),
    (
        "q17",
        "How do I check whether a piece of text occurs inside a longer string, or whether a key is present in a dictionary?",
        ("comparisons", "in"),
    ),
    (
        "q18",
        "What happens to the error if the cleanup code that always runs at the end of a try block itself "
        "returns from the function?",
        ("try",),
    ),
]


def demo_collection() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """``(corpus, questions, qrels)``: topic id -> text, question id -> text, question id -> {topic: 1}.

    Topics missing from this Python's ``pydoc_data`` are dropped from the judgments, and a question
    left with none is dropped.
    """
    from pydoc_data.topics import topics

    corpus = {name: text for name, text in sorted(topics.items())}
    questions: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for qid, text, gold in DEMO_QUESTIONS:
        judged = {doc: 1 for doc in gold if doc in corpus}
        if judged:
            questions[qid], qrels[qid] = text, judged
    return corpus, questions, qrels
