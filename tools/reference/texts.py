"""Fixed texts for the tokenizer and logits fixtures (hand-written, no external data)."""

# Hard strings tokenized with special=True (special-token text becomes the special token).
HARD_STRINGS: list[tuple[str, str]] = [
    ("empty", ""),
    ("single-space", " "),
    ("ascii-sentence", "Hello, world! How are you today?"),
    ("accents", "Café crème brûlée, naïve façade, Ångström, Øresund, Straße, señor, ¿qué tal?"),
    ("emoji-simple", "I love pizza 🍕 and cats 🐱! 😀😃😄"),
    ("emoji-zwj", "Family: 👨‍👩‍👧‍👦, rainbow flag: 🏳️‍🌈, skin tone: 👋🏽, technologist: 👩🏻‍💻"),
    ("emoji-flags-keycaps", "🇫🇷🇯🇵🇺🇸 1️⃣ #️⃣ ©️"),
    ("cjk", "你好，世界！今天天气很好。日本語のテキスト、ひらがなとカタカナ。한국어 문장입니다."),
    ("arabic-hebrew", "مرحبا بالعالم، كيف حالك؟ שלום עולם"),
    ("cyrillic-greek", "Привет, мир! Γειά σου Κόσμε. Ελληνικά και русский."),
    ("devanagari-thai", "नमस्ते दुनिया สวัสดีชาวโลก"),
    ("spaces-1-10", "a b  c   d    e     f      g       h        i         j          k"),
    ("tabs-newlines", "a\tb\t\tc\t\t\td\ne\n\nf\n\n\ng\r\nh\r\n\r\ni"),
    ("mixed-whitespace", " \t \n \t\t\n\n  \t x \n\t y\t \n"),
    ("leading-trailing-spaces", "   leading and trailing   "),
    ("only-newlines", "\n\n\n\n\n\n\n\n\n\n"),
    ("only-spaces", "          "),
    ("spaces-before-newline", "line one   \n   line two\t\n\tline three"),
    ("digits-long", "1234567890 3.14159265358979 -42 1,000,000 0x1F 2024-01-31 12:30:45 1e-10 007"),
    ("digits-in-words", "abc123def 4ever COVID19 x86_64 v2.0.1 H2O 3rd 21st"),
    ("contractions-lower", "it's don't they're we've I'm you'll he'd she's can't won't"),
    ("contractions-upper", "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D"),
    ("contractions-mixed", "It'S dOn'T They'Re 'tis 'twas rock'n'roll o'clock ''quoted''"),
    ("python-code", "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n"),
    ("json-code", '{"name": "CastServe", "version": [1, 2, 3], "nested": {"ok": true, "x": null}, "s": "a\\"b"}'),
    ("c-code", "#include <stdio.h>\n\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) {\n\t\tprintf(\"%d\\n\", i);\n\t}\n\treturn 0;\n}\n"),
    ("swift-code", "struct Point { var x: Double; var y: Double }\nlet p = Point(x: 1.5, y: -2)\nguard let v = p as? Point else { fatalError() }\n"),
    ("urls", "See https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=%20z#frag or mailto:a.b@example.com, ftp://10.0.0.1:21/"),
    ("punctuation-runs", "Wait... what?!?! --- *** ### ===> <=== ((()))[[]]{{}} ;;; ::: ,,, ''' \"\"\" ``` ~~~"),
    ("markdown", "# Title\n\n- item **bold** _it_\n- `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"),
    ("special-mid-text", "Hello<|im_start|>user\nHi there<|im_end|>\nbye"),
    ("special-adjacent", "word<|im_start|>word<|im_end|>word<|endoftext|>word"),
    ("special-spaced", " <|im_start|> <|im_end|> "),
    ("special-only", "<|im_start|><|im_end|><|endoftext|>"),
    ("special-lookalike", "<|im_start|<|im_end||im_start|> <|IM_START|> <|im_starts|>"),
    ("nul-and-controls", "a\u0000b\u0001c\u007fd\u001be[0m"),
    ("replacement-and-bom", "\ufeffBOM then \ufffd replacement and \u200b zero-width \u00a0 nbsp"),
    ("combining-marks", "e\u0301 a\u0308 n\u0303 Z\u0351\u0367\u0311a\u0364\u0301l\u0357g\u0302o"),
    ("math-symbols", "∑_{i=1}^{n} x_i ≤ ∞, ∀ε>0 ∃δ: |x−y|<δ ⇒ f(x)≈f(y); √2 ≠ π ± ½"),
    ("long-word", "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious"),
    ("repeated-chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!!!!! ----------------------------------------"),
    ("mixed-scripts", "The word 'hello' is 'bonjour' (français), 'hola' (español), 'こんにちは' (日本語), 'مرحبا' (عربي)."),
]

# Same special-token texts, tokenized with special=False (treated as plain text).
NON_SPECIAL_STRINGS: list[tuple[str, str]] = [
    ("ns-special-mid-text", "Hello<|im_start|>user\nHi there<|im_end|>\nbye"),
    ("ns-special-adjacent", "word<|im_start|>word<|im_end|>word<|endoftext|>word"),
    ("ns-special-only", "<|im_start|><|im_end|><|endoftext|>"),
    ("ns-chatml", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("ns-plain", "Plain text with no special tokens at all."),
]

# Plain texts for the logits fixture (also put in the tokenizer fixture so ids are shared).
LOGITS_PLAIN: list[tuple[str, str]] = [
    ("logits-plain-short", "The quick brown fox jumps over the lazy dog."),
    ("logits-plain-code", "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\ndef mul(a, b):\n"),
    (
        "logits-plain-long",
        "The history of computing is a story of steadily shrinking machines and steadily growing ambitions. "
        "In the 1940s, the first electronic computers filled entire rooms, consumed enormous amounts of power, "
        "and were programmed by physically rewiring their circuits. Engineers worked in shifts to replace the "
        "vacuum tubes that failed every few hours. A decade later, the invention of the transistor made machines "
        "smaller, cheaper and far more reliable, and high-level languages such as Fortran and COBOL let scientists "
        "and businesses describe their problems in something closer to ordinary notation. The integrated circuit "
        "followed, packing many transistors onto a single chip of silicon, and by the 1970s the microprocessor had "
        "placed an entire central processing unit on one chip. Personal computers arrived in homes and offices, "
        "spreadsheets and word processors changed how people worked, and networks began to connect machines across "
        "campuses and then across continents. The World Wide Web, introduced in the early 1990s, turned the internet "
        "into a place that ordinary people visited every day. Mobile phones then put a connected computer in almost "
        "every pocket. Today, researchers train large language models on vast collections of text, and small models "
        "can run on a laptop with only two processor cores. Each step made computing more personal, more powerful, "
        "and more deeply woven into everyday life, and each step raised new questions about",
    ),
]
