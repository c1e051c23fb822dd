"""Train a variable-length sequence tagger with padkern, end to end on ragged batches.

Task: tag every token that repeats the token before it. Sequences have 0 to 40 tokens
(empty ones included, which torch's packing rejects); batches are collated by
``padkern.collate`` straight into a ``Ragged``, and no layer ever sees padding:
embedding on the real tokens, a bidirectional ``padkern.nn.LSTM``, a ``ragged_linear``
head and a loss over real tokens only. Runs under ``torch.autocast`` where the device
supports it (bfloat16 on the CPU, float16 on a GPU).

    python examples/repeat_tagger.py            # about half a minute on a 2-core CPU
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import padkern

VOCABULARY = 12


class RepeatDataset(torch.utils.data.Dataset):
    def __init__(self, size: int, max_length: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.randint(0, max_length + 1, (size,), generator=generator)
        self.tokens = [torch.randint(0, VOCABULARY, (int(n),), generator=generator) for n in lengths]

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        tokens = self.tokens[index]
        repeats = torch.zeros_like(tokens)
        repeats[1:] = (tokens[1:] == tokens[:-1]).long()
        return tokens, repeats


class Tagger(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, hidden)
        self.lstm = padkern.nn.LSTM(hidden, hidden, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, tokens: padkern.Ragged) -> padkern.Ragged:
        out, _ = self.lstm(tokens.with_values(self.embed(tokens.values)))
        return padkern.ops.ragged_linear(out, self.head.weight, self.head.bias)


def accuracy(model, loader, device) -> float:
    correct = total = 0
    with torch.no_grad():
        for tokens, tags in loader:
            logits = model(padkern.Ragged(tokens.values.to(device), tokens.offsets.to(device)))
            correct += int((logits.values.argmax(1).cpu() == tags.values).sum())
            total += tags.values.numel()
    return correct / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--no-autocast", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    use_autocast = not args.no_autocast and torch.amp.is_autocast_available(device.type)

    train = torch.utils.data.DataLoader(RepeatDataset(2048, 40, seed=1), batch_size=32, shuffle=True,
                                        collate_fn=padkern.collate)
    test = torch.utils.data.DataLoader(RepeatDataset(512, 40, seed=2), batch_size=64, collate_fn=padkern.collate)
    model = Tagger(hidden=48).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # float16 gradients need scaling; bfloat16's range does not.
    scaler = torch.amp.GradScaler(device.type, enabled=use_autocast and autocast_dtype == torch.float16)
    begin = time.perf_counter()
    for epoch in range(args.epochs):
        for tokens, tags in train:
            tokens = padkern.Ragged(tokens.values.to(device), tokens.offsets.to(device))
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                logits = model(tokens)
                loss = F.cross_entropy(logits.values.float(), tags.values.to(device))
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {accuracy(model, test, device):.3f}")
    precision = f"autocast {autocast_dtype}" if use_autocast else "float32"
    print(f"{time.perf_counter() - begin:.1f} s on {device} ({precision})")


if __name__ == "__main__":
    main()
