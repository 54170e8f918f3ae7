"""Built-in metrics (registration only; torch-free): the paper's evaluation measures.

The implementations are the pure functions of ``infovae.metrics``; each factory in
``infovae.plugins.metrics.builtin`` wraps one with its typed options. The option
lists below are the single declaration: registration, listing and the factories'
own checks (``infovae.check_options``) all read them.
"""
from infovae import Option, hookimpl

SPLIT_SEED = Option("split_seed", int, 0, "seed of the fixed split of the examples (same split for every model)")

OPTIONS = {
    "nll": [
        Option("num_samples", int, None, "importance samples K per example (default: 1000 for dim z <= 10, else 5000)", minimum=1),
        Option("estimator", str, "is", "is: importance sampling; ais: annealed importance sampling p(z) -> p(z|x) with HMC", choices=("is", "ais")),
        Option("proposal", str, "encoder", "IS proposal: q(z|x), or q(z|x) refined per example by ELBO steps", choices=("encoder", "refined")),
        Option("scale_factor", float, 1.0, "multiply the proposal's scale by this (IS)", greater_than=0.0),
        Option("prior_weight", float, 0.0, "mix the proposal with the prior p(z) with this weight (IS; defensive mixture)", minimum=0.0, maximum=1.0),
        Option("refine_steps", int, 50, "Adam steps on the per-example ELBO for proposal=refined", minimum=0),
        Option("ais_steps", int, 500, "AIS temperatures (sigmoidal schedule)", minimum=1),
        Option("ais_chains", int, 16, "AIS chains per example", minimum=1),
        Option("leapfrog_steps", int, 10, "HMC leapfrog steps per AIS temperature", minimum=1),
    ],
    "mutual-information": [
        Option("mi_points", int, None, "data points M of the estimator (default: all; at most log M nats)", minimum=2),
        SPLIT_SEED,
    ],
    "mmd-prior": [
        Option("kernel", str, "rbf", "kernel: rbf exp(-r/(2 s^2)) or imq c/(c+r)", choices=("rbf", "imq")),
        Option("bandwidth", str, "", "sigma (rbf) or c (imq): a positive number or median; empty: sqrt(2 D), the same for every model"),
        Option("estimator", str, "biased", "biased V-statistic (>= 0) or unbiased U-statistic", choices=("biased", "unbiased")),
    ],
    "logdet-cov": [],
    "kl": [],
    "active-units": [
        Option("threshold", float, 0.01, "a unit is active when Var_x E_q[z_u|x] exceeds this (Burda et al.)", minimum=0.0),
    ],
    "reconstruction": [],
    "class-distribution": [
        Option("num_generated", int, None, "ancestral samples to classify (default: as many as examples)", minimum=1),
        Option("pseudo_count", float, 1.0, "added to every class count of the samples (0: a class never generated gives inf)", minimum=0.0),
        Option("classifier_test_fraction", float, 0.2, "share of the labelled examples held out to score the classifier", greater_than=0.0, less_than=1.0),
        Option("classifier_cache", str, "", "directory to keep the fitted CNN classifier in (safetensors) and reuse it from; empty: fit it every time"),
        SPLIT_SEED,
    ],
    "semi-supervised": [
        Option("num_labels", int, 1000, "labelled examples the SVM is trained on (at most half the examples)", minimum=2),
        Option("svm_c", float, 1.0, "the SVM's C", greater_than=0.0),
        SPLIT_SEED,
    ],
}

SUMMARIES = {
    "nll": "-log p(x) by importance sampling (q(z|x) or a better proposal) or AIS (nats, bits/dim, standard error).",
    "mutual-information": "I_q(x; z) with q(z) as the mixture of M posteriors (appendix B.2); at most log M nats.",
    "mmd-prior": "MMD^2 between the codes z ~ q(z|x) of the whole split and as many prior draws.",
    "logdet-cov": "log det Cov[z] / dim over z ~ q(z|x) of the split; 0 for N(0, I).",
    "kl": "Mean analytic KL(q(z|x) || p(z)) in nats, with its standard error.",
    "active-units": "Latent units whose posterior mean varies over the data (Burda et al.).",
    "reconstruction": "-E_q(z|x)[log p(x|z)], one z per example (the trainer's term), nats.",
    "class-distribution": "The paper's l_ce = KL(c || c_hat): data class histogram vs classified samples (nats; 0 when they match). Needs labels.",
    "semi-supervised": "Accuracy of an RBF SVM on posterior means from a few labelled examples. Needs labels.",
}


@hookimpl
def register_metrics(register):
    for name, options in OPTIONS.items():
        factory = "infovae.plugins.metrics.builtin:" + name.replace("-", "_")
        register(name, factory, summary=SUMMARIES[name], options=options)
