"""The page's words and style: the how-to line, the Learn tab, LaTeX delimiters and the CSS."""
from __future__ import annotations

from ..attribution.registry import METHODS
from ..attribution.outputs import OUTPUT_FUNCTIONS


def learn_text() -> str:
    rows = "\n".join(f"| {m.label} | {m.group} | ${m.formula}$ |" for m in METHODS.values())
    outs = "\n".join(f"| {o.label} | ${o.latex}$ |" for o in OUTPUT_FUNCTIONS.values())
    return LEARN.format(methods=rows, outputs=outs)


LEARN = r"""
### What the explorer shows
**Data attribution** asks which training images made a model produce an output. A method gives every training
image $x_i$ a score $\tau(q, i)$ for a query $q$: large positive = **proponent** (it made the output more likely),
negative = **opponent**.

**Features.** For a diffusion model the "output" is a function $f$ of the predicted noise $\epsilon_\theta(x_t,t)$
at noise level $t$. Its gradient with respect to the weights, averaged over $S$ timesteps, is each image's feature
$$g(x)=\tfrac1S\sum_s\nabla_\theta f(x,t_s,\epsilon_s;\theta),\qquad \phi(x)=P^\top g(x)$$
where $P$ is a random projection to $k$ numbers, or nothing at all in the **exact** mode (the default for the small
shipped models: $k = p$, the method's own answer).

**Output functions** (the paper's Table 1):

| name | $f$ |
|---|---|
{outputs}

TRAK uses $L_\text{{Simple}}$, the training loss; **D-TRAK** uses $L_\text{{Square}}$, which ignores the noise
target — and, surprisingly, attributes better.

**Timestep strategies** (each (image, $t$) has its own seeded noise $\epsilon$):

| strategy | timesteps |
|---|---|
| Uniform grid (the paper's) | $t_s=\lfloor sT/S\rfloor,\ s=0,\dots,S-1$ |
| Random | $t_s\sim\mathcal U\{{0,\dots,T-1\}},\ S$ seeded draws |
| First $S$ | $t_s=s,\ s=0,\dots,S-1$ |
| One timestep (Timesteps tab) | $\{{t\}}$ |

**Methods**

| method | family | score |
|---|---|---|
{methods}

with $\tau(q,i)=\phi(q)^\top(\Phi^\top\Phi+\lambda I)^{{-1}}\phi(x_i)$, $\Phi$ stacking the training features.

**LDS** (linear datamodeling score): train $M$ models on random halves $S_m$ of the data, measure each one's loss
$y_m(q)$ on the query, and check whether $\hat y_m(q)=\sum_{{i\in S_m}}-\tau(q,i)$ ranks the halves the same way:
$$\mathrm{{LDS}}=\mathbb E_q\,\rho_\text{{Spearman}}\big(\hat y_\cdot(q),\,y_\cdot(q)\big).$$
100 % is a perfect ranking, 0 no signal. $\lambda$ is tuned on half of the models and LDS reported on the other half.

**Counterfactual**: delete a method's top 20 % proponents $R$, retrain ($\theta_{{\setminus R}}$), regenerate from the
same noise $z$ with DDIM, and measure how far the image moved:
$$L_2=\big\|\mathrm{{DDIM}}_\theta(z)-\mathrm{{DDIM}}_{{\theta_{{\setminus R}}}}(z)\big\|_2,\qquad
\cos=\frac{{e(x)^\top e(x')}}{{\|e(x)\|\,\|e(x')\|}}$$
with $e$ the classifier's embedding. If the attribution is right the image changes more than after removing as many
random images (large $L_2$, low cosine).
"""


LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
HOWTO = ("New to data attribution? Take the seven-step lesson (the button below). **1.** Pick a query: a benchmark image, a "
         "generated seed, or your own upload. **2.** Pick a method (D-TRAK is the paper's). **3.** Read the training "
         "images that most raised (proponents) or lowered (opponents) the model's output; the *Evaluation* tab says "
         "how far each method can be trusted.")


# after an answer: a message in the result area (a problem, or "not computed yet") is scrolled into view
SHOW_STATUS = """() => { const s = document.querySelector('#status');
  if (s && s.offsetParent !== null && s.innerText.trim()) s.scrollIntoView({block: 'center'}); }"""


CSS = """
.gallery-item img, #query-img img, #big img, .thumbnail-item img { image-rendering: pixelated; }
#status, #cmp-status, #t-status, #ev-status { border-left: 4px solid #f59e0b; padding-left: 8px; }
.katex-display { overflow-x: auto; overflow-y: hidden; }
/* galleries of tiles: the caption is text below the image (rank, label, score), never over it; rows wrap */
.tiles .grid-wrap { padding-top: 32px !important; overflow-y: visible !important; height: auto !important;
  min-height: 0 !important; max-height: none !important; }
.tiles .grid-container { grid-template-rows: none !important; grid-auto-rows: auto !important; gap: 6px !important;
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
.tiles .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex;
  flex-direction: column; overflow: visible !important; }
.tiles .thumbnail-item img { aspect-ratio: 1; object-fit: contain; }
.tiles .caption-label { position: static !important; max-width: 100% !important; white-space: pre-line !important;
  font-size: 14px !important; line-height: 1.3; text-align: center !important; border: none !important;
  background: none !important; opacity: 1 !important; font-variant-numeric: tabular-nums; padding: 2px 0 !important; }
#start-lesson { max-width: 14em; }
#cf-gallery .grid-container { max-width: 760px; }
.tiles .thumbnail-item { max-width: 150px; }
.tiles .caption-label { overflow-wrap: anywhere; }
/* a phone: the answer first, the controls below it; four tiles a row */
@media (max-width: 640px) {
  #results-col { order: -1; }
  .tiles .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
  .tiles .caption-label { font-size: 12px !important; }
  #cf-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
}
"""
