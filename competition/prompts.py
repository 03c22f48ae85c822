"""Named prompt templates and the conversation format they are rendered in.

    python -c "from competition.prompts import render; print(render('short_answer', 'What color is the cube?'))"

A template only words the request; the conversation around it comes from the processor's chat
template when the model has one (llava-hf checkpoints), else from the LLaVA v1 USER/ASSISTANT
format. The rendered text holds one image placeholder, expanded to the image tokens later.
"""

from __future__ import annotations

from typing import Any

from competition.errors import ConfigError

IMAGE_TOKEN = "<image>"
# The system texts of the original LLaVA code's conversation templates (llava/conversation.py):
# `--version v1` trains with conv_vicuna_v1, `llava_v1` is conv_llava_v1.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
TEMPLATES: dict[str, str] = {
    "plain": "{question}",
    "short_answer": "{question}\nAnswer the question using a single word or phrase.",
    "one_word": "{question}\nAnswer with one word.",
    "vicuna_v1": "{question}",
    "llava_v1": "{question}",
}
SYSTEMS: dict[str, str] = {"vicuna_v1": VICUNA_V1_SYSTEM, "llava_v1": LLAVA_V1_SYSTEM}


def check_prompt(name: str) -> str:
    """Return `name` if it is a known template, else a ConfigError listing them."""
    if name not in TEMPLATES:
        raise ConfigError(f"unknown prompt '{name}' (known prompts: {', '.join(TEMPLATES)})")
    return name


def request(name: str, question: str) -> str:
    """The template's words around one question, without any conversation format."""
    return TEMPLATES[check_prompt(name)].format(question=question.strip())


def conversation(name: str, question: str, answer: str | None = None) -> list[dict[str, Any]]:
    """Chat messages: the template's system text if any, the user's image and request, the answer if given."""
    system = SYSTEMS.get(name)
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request(name, question)}]})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def render(name: str, question: str, processor: Any | None = None, image_block: str = IMAGE_TOKEN) -> str:
    """The model input for one question, up to and including the assistant's turn marker."""
    if processor is not None and getattr(processor, "chat_template", None):
        return processor.apply_chat_template(conversation(name, question), add_generation_prompt=True)
    system = SYSTEMS.get(name)
    head = f"{system} " if system else ""
    return f"{head}USER: {image_block}\n{request(name, question)} ASSISTANT:"


def render_followup(name: str, question: str, processor: Any | None = None) -> str:
    """A later turn of a multi-turn conversation about the same image (no image, no system text)."""
    if processor is not None and getattr(processor, "chat_template", None):
        raise ConfigError("train.pack_questions > 1 needs the built-in USER/ASSISTANT format (no chat template)")
    return f"USER: {request(name, question)} ASSISTANT:"


def vocabulary_text() -> list[str]:
    """Every fixed word the templates can emit, for training a tokenizer that knows them."""
    return [render(name, "") for name in TEMPLATES]
