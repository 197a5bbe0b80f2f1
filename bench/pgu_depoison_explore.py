"""De-poisoning configurations on a few models of a finished config/pgu-cnn-depoison.yaml run.

`python bench/pgu_depoison_explore.py RESULTS_DIR MODELS 'VARIANTS'`, RESULTS_DIR e.g.
results/pgu-cnn-depoison-10, MODELS the first n original models, VARIANTS a JSON list of
[method, hyper-parameter overrides of the method's defaults] with method `pgu_depoison` or `pgu_trgp`, e.g.
'[["pgu_depoison", {}], ["pgu_trgp", {"scale_lr": 0.3, "patience": 10}]]'. Prints the originals'
mean test accuracy, then per variant the unlearned models' mean test accuracy (and its change),
epochs run, the share of poisoned points still given their flipped label, seconds per model and
the first stopping reasons (README, Table 4).
"""

import json
import sys
import time

import numpy as np
import torch

from unlearnflow.core.artifacts import read_bank, read_dataset, read_forget_samples
from unlearnflow.methods.request import ForgetRequest
from unlearnflow.pgu.gradient_space import read_gradient_space
from unlearnflow.registry import hyperparameters, spec_of


def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        model.eval()
        return float((model(inputs).argmax(1) == labels).float().mean())


def main(results: str, n_models: int, variants: list) -> None:
    torch.set_num_threads(1)
    dataset = read_dataset(f"{results}/data.h5")
    bank = read_bank(f"{results}/original_models.h5")
    space = read_gradient_space(f"{results}/gradient_space.h5")
    name = results.rstrip("/").rsplit("-", 1)[1]
    samples = read_forget_samples(f"{results}/forget_samples/poison_{name}.h5")
    test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    forget = tuple(torch.from_numpy(array) for array in samples.request(0))
    validation = torch.from_numpy(samples.x_val), torch.from_numpy(samples.y_val)

    def models():
        return bank.load_models(dataset.input_shape, dataset.num_classes)[:n_models]

    original = np.mean([accuracy(model, *test) for model in models()])
    print(f"{results}: {len(forget[1])} poisoned points, originals' test accuracy {original:.4f} ({n_models} models)")
    for method, overrides in variants:
        unlearn = spec_of(method).unlearn
        accuracies, epochs, flipped, seconds, reasons = [], [], [], [], []
        for index, model in enumerate(models()):
            request = ForgetRequest(forget_inputs=forget[0], forget_labels=forget[1], num_classes=dataset.num_classes,
                                    step=0, validation_inputs=validation[0], validation_labels=validation[1],
                                    side={"gradient_space": space.model(index)}, state=None)
            start = time.perf_counter()
            result = unlearn(model, request, hyperparameters(method, overrides), index)
            seconds.append(time.perf_counter() - start)
            accuracies.append(accuracy(model, *test))
            flipped.append(accuracy(model, *forget))
            epochs.append(result.certificate["epochs"])
            reasons.append(result.certificate["stopped"])
        print(f"{method} {json.dumps(overrides)}: test accuracy {np.mean(accuracies):.4f} "
              f"({100 * (np.mean(accuracies) - original):+.2f} points), epochs {np.mean(epochs):.1f}, "
              f"flipped label kept {np.mean(flipped):.3f}, {np.mean(seconds):.2f} s per model; {reasons[0]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
