#!/usr/bin/env python3
"""Writes Sources/CDTraining/Resources/regularization-captions.txt: the default regularization
caption set of `cdtrainerd merge` (paper section 3.2 uses ~1000 captions of everyday images).

The captions are composed for this project from hand-written lists of subjects, actions, places
and photo styles, in a fixed pseudo-random order (seed 20261127), one per line, 1000 distinct
lines. They stand in for LAION captions: varied everyday scenes, objects, animals, people and art,
so that the merge's regularization features cover common words. Rerun to regenerate.
"""
import random
from pathlib import Path

SUBJECTS = [
    "a dog", "two cats", "a horse", "a red bicycle", "an old car", "a city bus", "a sailboat", "a steam train",
    "a young woman", "an elderly man", "a group of children", "a chef", "a street musician", "a farmer",
    "a wooden chair", "a ceramic vase", "a bowl of soup", "a plate of pasta", "a cup of coffee", "a birthday cake",
    "a pair of sneakers", "a leather bag", "a wristwatch", "a laptop", "a smartphone", "a stack of books",
    "a potted plant", "a bunch of tulips", "a sunflower field", "an oak tree", "a mountain lake", "a lighthouse",
    "a castle", "a small cottage", "a glass skyscraper", "a wooden bridge", "a market stall", "a fountain",
    "a teddy bear", "a toy robot", "a guitar", "a grand piano", "a parrot", "a golden retriever puppy",
    "a tabby kitten", "a cow", "a flock of sheep", "a fox", "a deer", "an owl", "a butterfly", "a goldfish",
    "a pizza", "a basket of apples", "a loaf of bread", "a bottle of wine", "a teapot", "a lamp", "a sofa",
    "a kitchen table", "a bed with white sheets", "a bathtub", "a front door", "a mailbox", "a bookshelf",
    "a vintage camera", "a hot air balloon", "a tractor", "a motorcycle", "a skateboard", "a surfboard",
    "a snowman", "a campfire", "a tent", "a backpack", "a painting of flowers", "a marble statue",
    "a stained glass window", "a clock tower", "a windmill", "a barn", "a garden gnome", "a wooden pot",
    "a knitted sweater", "a straw hat", "a pair of glasses", "an umbrella", "a suitcase", "a wedding dress",
]
ACTIONS = [
    "", "standing", "sitting", "resting", "in the sunlight", "covered in snow", "in the rain", "at night",
    "seen from above", "close to the camera", "next to a window", "on a wooden table", "on the grass",
    "in front of a brick wall", "under a blue sky", "surrounded by flowers", "with a white background",
    "reflected in the water", "in soft morning light", "at sunset", "during a festival", "in the fog",
]
PLACES = [
    "", "in a park", "on a beach", "in a forest", "in a kitchen", "in a living room", "on a city street",
    "in a museum", "in the mountains", "in a small village", "at a train station", "in a garden",
    "in a cafe", "in a classroom", "in a desert", "by a river", "on a farm", "in an office", "at the harbor",
    "in a library", "in a snowy field", "in a studio",
]
STYLES = [
    "a photo of", "a close-up photo of", "a blurry photo of", "a black and white photo of", "an old photo of",
    "a painting of", "a watercolor of", "a drawing of", "a sketch of", "a cartoon of", "a 3d render of",
    "a postcard of", "an advertisement with", "a poster of", "a snapshot of", "a professional photo of",
]

def main():
    rng = random.Random(20261127)
    seen, lines = set(), []
    while len(lines) < 1000:
        parts = [rng.choice(STYLES), rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(PLACES)]
        caption = " ".join(p for p in parts if p)
        if caption not in seen:
            seen.add(caption)
            lines.append(caption)
    out = Path(__file__).resolve().parent.parent / "Sources/CDTraining/Resources/regularization-captions.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} captions -> {out}")

if __name__ == "__main__":
    main()
