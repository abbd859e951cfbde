"""Inside the model: what the base LLM and the embedder do with a user's own corpus and questions.

The views behind the app's **Inside** page and ``workbench inspect``, each a plain function over models
the caller has already loaded (the app shares its cached models with the chat page):

- ``tokens``: a text split into the base model's and the embedder's tokens, side by side.
- ``nexttoken``: the next-token distribution after the real RAG or closed-book prompt of a question
  (logits → softmax), reshaped by temperature, top-k and top-p, and sampled continuations.
- ``attention``: per layer and head, who attends to whom over the prompt, and how much the position that
  produces the answer's first token looks at each passage and at the question.
- ``changes``: what fine-tuning changed: teacher-forced probabilities of a gold answer under the base
  model and an adapter, per token and over a batch of eval questions split by kind.
- ``space``: the index's chunks and a query projected to 2-D, a sentence-similarity matrix, and vector
  arithmetic over embedded phrases.

Prompts come from ``workbench.answering.prompt.build_prompt`` (the builder evaluation uses) and are rendered by
``workbench.answering.generate.render_prompt``, so every view shows the prompt the model really reads.
"""
