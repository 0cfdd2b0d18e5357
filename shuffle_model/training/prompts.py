"""A generator of diverse chat prompts for self-distillation, written for this project.

The Spec-Bench questions are the evaluation set and are never used here. Prompts come from
templates over topics, roles, tasks and random numbers, in the kinds of request a chat model
meets (explanations, writing, role play, reasoning, maths, code, extraction, translation, QA);
`passage_prompts` turns earlier answers into summarisation and reading-comprehension prompts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

TOPICS = """photosynthesis; black holes; the water cycle; volcanoes; climate change; the immune
system; electric cars; the printing press; the Roman Empire; the French Revolution; ancient
Egypt; the Silk Road; jazz music; the Renaissance; impressionist painting; coffee; chocolate;
bread baking; fermentation; honeybees; coral reefs; rainforests; deserts; migration of birds;
the moon landing; the internet; smartphones; artificial intelligence; machine learning;
cryptography; blockchains; renewable energy; solar panels; wind turbines; nuclear power;
recycling; plastic pollution; ocean currents; earthquakes; hurricanes; the human brain; sleep;
exercise; nutrition; vaccines; antibiotics; DNA; evolution; dinosaurs; fossils; the stock
market; inflation; budgeting; saving for retirement; starting a small business; remote work;
time management; public speaking; learning a new language; chess; football; the Olympic
games; marathon running; yoga; meditation; gardening; composting; houseplants; dogs; cats;
elephants; octopuses; whales; bees and pollination; mountains; rivers; glaciers; the solar
system; Mars; telescopes; the speed of light; gravity; magnetism; electricity; batteries;
3D printing; robots; bridges; skyscrapers; trains; airplanes; bicycles; city planning; libraries;
museums; photography; film making; video games; board games; poetry; Shakespeare; Greek
mythology; fairy tales; democracy; human rights; the United Nations; volunteering; friendship;
kindness; happiness; stress; procrastination; writing a resume; job interviews; negotiation;
teamwork; leadership; open source software; databases; cloud computing; cybersecurity;
passwords; email etiquette; social media; online privacy; digital cameras; music theory; the
piano; the guitar; opera; hip hop; cooking pasta; making soup; vegetarian diets; tea; spices;
weather forecasting; rainbows; snowflakes; the northern lights; tides; maps; compasses; the
history of writing; paper; glass; steel; concrete; cotton; silk; wool; the Great Wall of China;
pyramids; castles; pirates; explorers; the Vikings; samurai; the Industrial Revolution; steam
engines; the telephone; radio; television; vaccines for children; first aid; fire safety;
camping; hiking; packing for a trip; visiting Japan; visiting Italy; visiting Brazil; learning
to swim; learning to drive; raising children; caring for elderly parents; moving to a new city"""

ROLES = """pirate captain; medieval knight; astronaut on the space station; detective in 1920s
London; friendly librarian; chef in a busy restaurant; marine biologist; mountain guide; museum
tour guide; kindergarten teacher; travel agent; personal fitness trainer; wise old wizard; robot
learning about humans; time traveller from the year 3000; journalist interviewing a scientist;
customer support agent; gardener; zookeeper; lighthouse keeper; sports commentator; barista;
airline pilot; history professor; startup founder; park ranger; news anchor; ghost in an old
house; dragon guarding a treasure; Shakespearean actor"""

CODE_TASKS = """reverses a string; checks whether a number is prime; returns the n-th Fibonacci
number; counts the vowels in a string; removes duplicates from a list while keeping the order;
finds the largest element of a list; sorts a list of dictionaries by a key; merges two sorted
lists; checks whether a string is a palindrome; converts Celsius to Fahrenheit; computes the
factorial of a number; flattens a nested list; counts word frequencies in a text; returns the
greatest common divisor of two numbers; validates an email address with a regular expression;
reads a CSV file and prints the average of a column; implements binary search; transposes a
matrix; generates all permutations of a list; checks whether two strings are anagrams; converts
a Roman numeral to an integer; computes the running sum of a list; finds the second largest
number in a list; chunks a list into groups of size n; capitalises every word in a sentence;
implements a simple stack class; implements a queue with two stacks; computes the median of a
list; checks whether parentheses in a string are balanced; returns the digits of a number;
rotates a list by k positions; finds common elements of two lists; counts the lines in a file;
parses a date string and returns the weekday; computes compound interest"""

LANGUAGES = ["Python", "Python", "Python", "JavaScript", "C", "Java", "Rust", "Go", "SQL"]
TARGET_LANGUAGES = ["French", "Spanish", "German", "Italian", "Portuguese"]
NAMES = """Alice; Bob; Carlos; Diana; Emma; Farid; Grace; Hiro; Ines; Jamal; Kofi; Lena; Mateo;
Nadia; Oscar; Priya; Quentin; Rosa; Sven; Tara; Umar; Vera; Wei; Ximena; Yusuf; Zoe"""
PLACES = """Paris; Tokyo; Nairobi; Lima; Oslo; Cairo; Sydney; Toronto; Mumbai; Berlin; Seoul;
Mexico City; Lisbon; Istanbul; Buenos Aires; Hanoi; Dublin; Cape Town; Vienna; Bangkok"""
OBJECTS = """apples; books; pencils; tickets; marbles; cupcakes; stamps; bottles of water; coins;
flowers; chairs; notebooks; oranges; boxes; candles; shirts; plates; cookies"""
CAPITALS = """France; Japan; Kenya; Peru; Norway; Egypt; Australia; Canada; India; Germany; South
Korea; Mexico; Portugal; Turkey; Argentina; Vietnam; Ireland; South Africa; Austria; Thailand"""
INVENTIONS = """the light bulb; the telephone; the printing press; the airplane; penicillin; the
World Wide Web; the steam engine; the radio; the bicycle; the microscope; vaccines; the
transistor; the compass; paper; the television"""


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.replace("\n", " ").split(";") if item.strip()]


def _sentence(rng: random.Random) -> str:
    name, place = rng.choice(_items(NAMES)), rng.choice(_items(PLACES))
    count, thing = rng.randint(2, 40), rng.choice(_items(OBJECTS))
    patterns = [
        f"{name} travelled to {place} last spring and bought {count} {thing} at the market.",
        f"In {place}, {name} opened a small shop that sells {thing}.",
        f"{name} says the weather in {place} is lovely in September.",
        f"Every morning {name} walks to the library and reads for {count} minutes.",
        f"The museum in {place} will be closed on Monday for repairs.",
        f"{name} and her brother cooked dinner for {count} guests on Saturday.",
        f"Tomorrow {name} will take the train from {place} to the coast.",
    ]
    return rng.choice(patterns)


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b, c = rng.randint(2, 99), rng.randint(2, 60), rng.randint(2, 30)
    thing, name = rng.choice(_items(OBJECTS)), rng.choice(_items(NAMES))
    options = [
        ("math", f"What is {a} times {b}?"),
        ("math", f"What is {a * b} divided by {b}? Explain each step."),
        ("math", f"Solve for x: {c}x + {a} = {c * b + a}."),
        ("math", f"What is {a}% of {b * 10}?"),
        ("math", f"Compute the sum of all integers from 1 to {a}."),
        ("math", f"A rectangle is {a} cm long and {b} cm wide. What are its area and perimeter?"),
        (
            "math_reasoning",
            f"{name} has {a} {thing} and buys {b} more, then gives away {c}. "
            "How many are left? Think step by step.",
        ),
        (
            "math_reasoning",
            f"A train travels {a * 10} km in {c} hours. What is its average "
            "speed, and how far does it go in 2 more hours at that speed?",
        ),
        (
            "math_reasoning",
            f"If {c} workers build a wall in {b} days, how long would "
            f"{c * 2} workers take, assuming they work at the same rate?",
        ),
        (
            "math_reasoning",
            f"A shop sells {thing} at {b} dollars each. With a {c}% discount, "
            f"how much do {a} of them cost?",
        ),
    ]
    return rng.choice(options)


def _reasoning(rng: random.Random) -> str:
    names = rng.sample(_items(NAMES), 3)
    a, b = rng.randint(3, 20), rng.randint(21, 40)
    options = [
        f"{names[0]} is taller than {names[1]}, and {names[1]} is taller than {names[2]}. "
        "Who is the shortest? Explain your reasoning.",
        "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Why?",
        f"{names[0]} is {a} years old. {names[1]} is twice as old as {names[0]} was {a // 2} "
        f"years ago. How old is {names[1]}?",
        f"I have {a} socks in a drawer, half black and half white. How many must I take out "
        "in the dark to be sure of a matching pair?",
        f"Which is heavier, a kilogram of feathers or a kilogram of {rng.choice(_items(OBJECTS))}? "
        "Explain.",
        f"A clock shows {rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])}. What "
        "is the angle between the hour and minute hands?",
        f"Is {b} a prime number? Explain how you checked.",
        f"Find the next number in the sequence {a}, {a + 3}, {a + 6}, {a + 9}, and explain the "
        "pattern.",
    ]
    return rng.choice(options)


def _topic_prompt(rng: random.Random) -> tuple[str, str]:
    topic, other = rng.sample(_items(TOPICS), 2)
    role = rng.choice(_items(ROLES))
    options = [
        ("qa", f"What is {topic}?"),
        ("qa", f"Give me three interesting facts about {topic}."),
        ("stem", f"Explain {topic} to a ten-year-old."),
        ("stem", f"How does {topic} work? Give a clear explanation."),
        ("stem", f"What are the main scientific ideas behind {topic}?"),
        ("humanities", f"Why is {topic} important to society?"),
        ("humanities", f"Describe the history of {topic} in a few paragraphs."),
        ("humanities", f"Compare {topic} and {other}. How are they similar and different?"),
        ("writing", f"Write a short poem about {topic}."),
        ("writing", f"Write a blog post introduction about {topic}."),
        ("writing", f"Write a persuasive paragraph on why people should learn about {topic}."),
        ("writing", f"Write an email to a friend telling them about {topic}."),
        ("writing", f"Write a short story in which {topic} plays an important role."),
        ("writing", f"Give me five tips related to {topic}."),
        ("writing", f"Write a list of pros and cons of {topic}."),
        ("roleplay", f"Pretend you are a {role}. Describe your typical day."),
        ("roleplay", f"You are a {role}. Tell me what you think about {topic}."),
        ("roleplay", f"Act as a {role} and give a beginner advice about {topic}."),
        ("roleplay", f"Imagine you are a {role} writing a diary entry about {topic}."),
    ]
    return rng.choice(options)


def _coding(rng: random.Random) -> str:
    task, language = rng.choice(_items(CODE_TASKS)), rng.choice(LANGUAGES)
    options = [
        f"Write a {language} function that {task}.",
        f"Write a {language} function that {task}. Add a short explanation.",
        f"How would you write a program that {task}? Use {language}.",
        f"Explain step by step how to write code that {task}.",
    ]
    return rng.choice(options)


def _text_task(rng: random.Random) -> tuple[str, str]:
    sentences = " ".join(_sentence(rng) for _ in range(rng.randint(1, 3)))
    language = rng.choice(TARGET_LANGUAGES)
    options = [
        ("translation", f"Translate the following text into {language}: {sentences}"),
        ("translation", f'How do you say this in {language}? "{_sentence(rng)}"'),
        ("extraction", f"Extract all names and places from this text: {sentences}"),
        ("extraction", f"List every number that appears in this text: {sentences}"),
        ("extraction", f"Rewrite this text as a bulleted list of facts: {sentences}"),
        ("qa", f"What is the capital of {rng.choice(_items(CAPITALS))}?"),
        ("qa", f"Who invented {rng.choice(_items(INVENTIONS))}, and when?"),
    ]
    return rng.choice(options)


def generate_prompts(count: int, *, seed: int = 0) -> list[dict]:
    """`count` distinct prompts {"category", "text"}, deterministic for a seed."""
    rng = random.Random(seed)
    makers = [
        (_topic_prompt, 10),
        (lambda r: ("coding", _coding(r)), 3),
        (_arithmetic, 3),
        (lambda r: ("reasoning", _reasoning(r)), 2),
        (_text_task, 3),
    ]
    weights = [w for _, w in makers]
    seen: set[str] = set()
    prompts: list[dict] = []
    attempts = 0
    while len(prompts) < count:
        attempts += 1
        if attempts > 50 * count:
            raise ValueError(f"the templates cannot make {count} distinct prompts")
        maker = rng.choices([m for m, _ in makers], weights)[0]
        category, text = maker(rng)
        if text not in seen:
            seen.add(text)
            prompts.append({"category": category, "text": text})
    return prompts


def passage_prompts(passages: list[str], *, seed: int = 0) -> Iterator[dict]:
    """Summarisation and reading-comprehension prompts over earlier answers."""
    rng = random.Random(seed)
    for passage in passages:
        passage = passage.strip()
        kind = rng.random()
        if kind < 0.4:
            yield {
                "category": "summarization",
                "text": f"Summarize the following text in two sentences:\n\n{passage}",
            }
        elif kind < 0.7:
            yield {
                "category": "rag",
                "text": "Answer the question using only the information below.\n\n"
                f"Information: {passage}\n\nQuestion: What is the main point?",
            }
        else:
            yield {
                "category": "extraction",
                "text": f"List the three most important keywords of this text:\n\n{passage}",
            }


# Hand-written requests in everyday wording, outside the template generator (and not Spec-Bench
# questions): how a head trained on template prompts does on text it has not seen the like of.
HANDWRITTEN_PROMPTS = [
    {"category": "explain", "text": "Explain why the sky is blue."},
    {"category": "writing", "text": "Write a short story about a robot who learns to paint."},
    {"category": "advice", "text": "Give me five tips for staying focused while studying."},
    {
        "category": "coding",
        "text": "Write a Python function that returns the factorial of a number.",
    },
    {"category": "compare", "text": "What are the main differences between cats and dogs as pets?"},
    {
        "category": "writing",
        "text": "Draft a polite email to my landlord asking when the heating will be repaired.",
    },
    {
        "category": "roleplay",
        "text": "You are a museum guide. Welcome a group of children to the dinosaur hall.",
    },
    {
        "category": "math",
        "text": "A train travels 180 km in 2 hours and then 120 km in 1.5 hours. What is its "
        "average speed over the whole trip?",
    },
    {
        "category": "reasoning",
        "text": "If all roses are flowers and some flowers fade quickly, can we conclude that "
        "some roses fade quickly? Explain.",
    },
    {
        "category": "extraction",
        "text": "From this sentence, list every date and place: 'The conference moved from Lyon "
        "on 3 May to Geneva on 9 June, then to Turin in September.'",
    },
    {"category": "translation", "text": "Translate into French: 'The library opens at nine."},
    {
        "category": "summary",
        "text": "Summarise in two sentences: Bees pollinate many crops. Without them, yields of "
        "fruits such as apples and almonds would fall sharply, and food prices would rise. "
        "Pesticides and habitat loss have reduced bee numbers in many countries.",
    },
    {"category": "stem", "text": "How does a refrigerator keep food cold?"},
    {"category": "humanities", "text": "Why did the Roman Empire split into East and West?"},
    {"category": "planning", "text": "Plan a relaxed three-day trip to Lisbon on a small budget."},
    {
        "category": "coding",
        "text": "What is the difference between a list and a tuple in Python? Show an example.",
    },
]
