// Backward rules for views, linear algebra, nn functions and indexing. Rules run with
// recording off; the hot ones call fused backward kernels (softmax, layer_norm,
// cross-entropy) or GEMMs straight through the dispatch table.
#include <utility>

#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"

namespace accel::autograd::record {

// ---- views ----

void reshape(Tensor& out, const Tensor& x) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "ViewBackward", {&x}, [shape = x.sizes()](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(shape)};
  });
}

void permute(Tensor& out, const Tensor& x, const Shape& dims) {
  if (!any_requires_grad({&x})) return;
  Shape inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inverse[dims[i]] = static_cast<int64_t>(i);
  set_history(out, "PermuteBackward", {&x}, [inverse](const Tensor& g) {
    return std::vector<Tensor>{g.permute(inverse)};
  });
}

void expand(Tensor& out, const Tensor& x) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "ExpandBackward", {&x}, [shape = x.sizes()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, shape)};
  });
}

void slice(Tensor& out, const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "SliceBackward", {&x}, [shape = x.sizes(), dim, start, end, step](const Tensor& g) {
    Tensor grad = zeros(shape, {g.dtype(), g.device()});
    grad.slice(dim, start, end, step).copy_(g);
    return std::vector<Tensor>{grad};
  });
}

void select(Tensor& out, const Tensor& x, int64_t dim, int64_t index) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "SelectBackward", {&x}, [shape = x.sizes(), dim, index](const Tensor& g) {
    Tensor grad = zeros(shape, {g.dtype(), g.device()});
    grad.select(dim, index).copy_(g);
    return std::vector<Tensor>{grad};
  });
}

void identity(Tensor& out, const Tensor& x, const char* name) {
  if (!any_requires_grad({&x})) return;
  set_history(out, name, {&x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

// ---- linear algebra ----

namespace {
// (B, M, K) @ (B, K, N) into a new (B, M, N) tensor, operands taken as strided views.
Tensor gemm(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty({a.size(0), a.size(1), b.size(2)}, a.dtype(), a.device());
  kernels::matmul(a.device(), a, b, Tensor(), out, false, GemmB::Transient);
  return out;
}

// The two GEMMs of a linear layer's backward from the gradient at its output, g (1, rows, out):
// the input's gradient g @ W (rows, in) and the weight's g^T @ x (out, in), each where needed.
std::pair<Tensor, Tensor> linear_gemm_grads(const Tensor& g, const SavedTensor& sx, const SavedTensor& sw, bool need_x,
                                            bool need_w) {
  Tensor gx = need_x ? gemm(g, sw.get().unsqueeze(0)).squeeze(0) : Tensor();
  Tensor gw = need_w ? gemm(g.transpose(1, 2), sx.get().unsqueeze(0)).squeeze(0) : Tensor();
  return {gx, gw};
}
}  // namespace

void bmm(Tensor& out, const Tensor& a, const Tensor& b) {
  if (!any_requires_grad({&a, &b})) return;
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  SavedTensor sa(need_b ? a : Tensor(), "BmmBackward"), sb(need_a ? b : Tensor(), "BmmBackward");
  set_history(out, "BmmBackward", {&a, &b}, [sa, sb, need_a, need_b](const Tensor& grad) {
    Tensor g = grad.to(need_a ? sb.get().dtype() : sa.get().dtype());
    Tensor ga = need_a ? gemm(g, sb.get().transpose(1, 2)) : Tensor();  // (B,M,N) @ (B,N,K)
    Tensor gb = need_b ? gemm(sa.get().transpose(1, 2), g) : Tensor();  // (B,K,M) @ (B,M,N)
    return std::vector<Tensor>{ga, gb};
  });
}

void linear(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!any_requires_grad({&x, &weight, &bias})) return;
  bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  bool need_b = bias.defined() && bias.requires_grad();
  SavedTensor sx(need_w ? x : Tensor(), "LinearBackward"), sw(need_x ? weight : Tensor(), "LinearBackward");
  set_history(out, "LinearBackward", {&x, &weight, &bias}, [sx, sw, need_x, need_w, need_b](const Tensor& grad) {
    // The bias gradient first: the column sum is a pass over grad while its producer has just
    // left it in cache; after the two GEMMs it comes from memory again.
    Tensor gb = need_b ? grad.sum({0}) : Tensor();
    auto [gx, gw] = linear_gemm_grads(grad.contiguous().unsqueeze(0), sx, sw, need_x, need_w);
    return std::vector<Tensor>{gx, gw, gb};
  });
}

void linear_gelu(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& derivative) {
  if (!any_requires_grad({&x, &weight, &bias})) return;
  bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  bool need_b = bias.defined() && bias.requires_grad();
  SavedTensor sx(need_w ? x : Tensor(), "LinearGeluBackward"), sw(need_x ? weight : Tensor(), "LinearGeluBackward");
  SavedTensor sd(derivative, "LinearGeluBackward");
  set_history(out, "LinearGeluBackward", {&x, &weight, &bias}, [sx, sw, sd, need_x, need_w, need_b](const Tensor& grad) {
    Tensor d = sd.get();
    Tensor g = grad.to(d.dtype()).contiguous();  // (rows, out)
    Tensor pre = Tensor::empty(d.sizes(), d.dtype(), d.device());  // the gradient at the pre-activation
    Tensor gb = need_b ? Tensor::empty({d.size(1)}, d.dtype(), d.device()) : Tensor();
    if (need_b) kernels::mul_column_sum(d.device(), g, d, pre, gb);
    else kernels::binary(d.device(), BinaryOp::Mul, g, d, pre);
    auto [gx, gw] = linear_gemm_grads(pre.unsqueeze(0), sx, sw, need_x, need_w);
    return std::vector<Tensor>{gx, gw, gb};
  });
}

// ---- nn ----

void softmax(Tensor& out, const Tensor& x, int64_t dim, bool log) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sout(out, log ? "LogSoftmaxBackward" : "SoftmaxBackward");
  set_history(out, log ? "LogSoftmaxBackward" : "SoftmaxBackward", {&x},
              [sout, dim, log, shape = x.sizes()](const Tensor& grad) {
    Tensor y = sout.get().contiguous();
    if (y.dim() == 0) y = y.reshape({1});  // as in the forward: the kernel needs a dim to reduce over
    Tensor g = grad.to(y.dtype()).reshape(y.sizes()).contiguous();
    Tensor gx = Tensor::empty(y.sizes(), y.dtype(), y.device());
    kernels::softmax_backward(y.device(), g, y, dim, log, gx);
    return std::vector<Tensor>{gx.reshape(shape)};
  });
}

void layer_norm(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t cols) {
  if (!any_requires_grad({&x, &weight, &bias})) return;
  Tensor x2;
  {
    NoGradGuard no_grad;
    x2 = x.contiguous().view({rows, cols});
  }
  SavedTensor sx(x2, "LayerNormBackward");
  SavedTensor sw(weight.defined() ? weight.detach().contiguous() : Tensor(), "LayerNormBackward");
  SavedTensor smean(mean, "LayerNormBackward"), srstd(rstd, "LayerNormBackward");
  bool need_x = x.requires_grad(), need_w = weight.defined() && weight.requires_grad();
  bool need_b = bias.defined() && bias.requires_grad();
  set_history(out, "LayerNormBackward", {&x, &weight, &bias},
              [=, x_shape = x.sizes(), w_shape = weight.defined() ? weight.sizes() : Shape{}](const Tensor& grad) {
    Tensor xs = sx.get();
    Tensor g = grad.to(xs.dtype()).contiguous().view({rows, cols});
    Tensor gx = need_x ? Tensor::empty({rows, cols}, xs.dtype(), xs.device()) : Tensor();
    Tensor gw = need_w ? Tensor::empty({cols}, xs.dtype(), xs.device()) : Tensor();
    Tensor gb = need_b ? Tensor::empty({cols}, xs.dtype(), xs.device()) : Tensor();
    kernels::layer_norm_backward(xs.device(), g, xs, sw.get(), smean.get(), srstd.get(), gx, gw, gb);
    return std::vector<Tensor>{need_x ? gx.view(x_shape) : Tensor(), need_w ? gw.view(w_shape) : Tensor(),
                               need_b ? gb.view(w_shape) : Tensor()};
  });
}

void add_layer_norm(Tensor& out, const Tensor& x, const Tensor& residual, const Tensor& sum, const Tensor& weight,
                    const Tensor& bias, const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t cols) {
  if (!any_requires_grad({&x, &residual, &weight, &bias})) return;
  SavedTensor ssum(sum, "AddLayerNormBackward");
  SavedTensor sw(weight.defined() ? weight.detach().contiguous() : Tensor(), "AddLayerNormBackward");
  SavedTensor smean(mean, "AddLayerNormBackward"), srstd(rstd, "AddLayerNormBackward");
  const bool need_x = x.requires_grad(), need_residual = residual.requires_grad();
  const bool need_w = weight.defined() && weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  set_history(out, "AddLayerNormBackward", {&x, &residual, &weight, &bias},
              [=, x_shape = x.sizes(), w_shape = weight.defined() ? weight.sizes() : Shape{}](const Tensor& grad) {
    Tensor s = ssum.get();
    Tensor g = grad.to(s.dtype()).contiguous().view({rows, cols});
    Tensor gs = need_x || need_residual ? Tensor::empty({rows, cols}, s.dtype(), s.device()) : Tensor();
    Tensor gw = need_w ? Tensor::empty({cols}, s.dtype(), s.device()) : Tensor();
    Tensor gb = need_b ? Tensor::empty({cols}, s.dtype(), s.device()) : Tensor();
    kernels::layer_norm_backward(s.device(), g, s, sw.get(), smean.get(), srstd.get(), gs, gw, gb);
    Tensor g_in = gs.defined() ? gs.view(x_shape) : Tensor();  // d(x + residual)/dx = d/dresidual = 1
    return std::vector<Tensor>{need_x ? g_in : Tensor(), need_residual ? g_in : Tensor(),
                               need_w ? gw.view(w_shape) : Tensor(), need_b ? gb.view(w_shape) : Tensor()};
  });
}

void attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs, double scale,
               double dropout_p, uint64_t seed, uint64_t offset) {
  if (!any_requires_grad({&q, &k, &v})) return;
  SavedTensor sq(q, "AttentionBackward"), sk(k, "AttentionBackward"), sv(v, "AttentionBackward");
  SavedTensor sp(probs, "AttentionBackward");
  set_history(out, "AttentionBackward", {&q, &k, &v}, [=](const Tensor& grad) {
    Tensor qs = sq.get(), ks = sk.get(), vs = sv.get();
    Tensor g = grad.to(kFloat32);
    if (g.stride(3) != 1) g = g.contiguous();
    // Gradients in the (B, T, H, D) layout of the projections they flow back into, so the
    // head split's views carry them to the Linear layers without a copy.
    auto like = [](const Tensor& t) {
      return Tensor::empty({t.size(0), t.size(2), t.size(1), t.size(3)}, t.dtype(), t.device()).transpose(1, 2);
    };
    Tensor gq = like(qs), gk = like(ks), gv = like(vs);
    kernels::attention_backward(qs.device(), g, qs, ks, vs, sp.get(), scale, dropout_p, seed, offset, gq, gk, gv);
    return std::vector<Tensor>{gq, gk, gv};
  });
}

void packed_attention(Tensor& out, const Tensor& qkv, int64_t heads, const Tensor& probs, double scale,
                      double dropout_p, uint64_t seed, uint64_t offset) {
  if (!any_requires_grad({&qkv})) return;
  SavedTensor sqkv(qkv, "PackedAttentionBackward"), sp(probs, "PackedAttentionBackward");
  set_history(out, "PackedAttentionBackward", {&qkv}, [=](const Tensor& grad) {
    Tensor packed = sqkv.get();
    auto split = [heads](const Tensor& t, int64_t i) { return kernels::packed_attention_head(t, heads, i); };
    Tensor g = grad.to(kFloat32);
    if (g.stride(3) != 1) g = g.contiguous();
    Tensor gqkv = Tensor::empty(packed.sizes(), packed.dtype(), packed.device());  // (B, T, 3 * heads * D)
    kernels::attention_backward(packed.device(), g, split(packed, 0), split(packed, 1), split(packed, 2), sp.get(),
                                scale, dropout_p, seed, offset, split(gqkv, 0), split(gqkv, 1), split(gqkv, 2));
    return std::vector<Tensor>{gqkv};
  });
}

void embedding(Tensor& out, const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  if (!any_requires_grad({&weight})) return;
  SavedTensor sidx(indices.reshape({-1}).contiguous(), "EmbeddingBackward");
  set_history(out, "EmbeddingBackward", {&weight},
              [sidx, padding_idx, shape = weight.sizes(), dtype = weight.dtype()](const Tensor& grad) {
    Tensor idx = sidx.get();
    Tensor g = grad.to(dtype).reshape({idx.numel(), shape[1]}).contiguous();
    if (padding_idx) {
      Tensor is_pad = (idx == scalar_tensor(*padding_idx, idx.dtype(), idx.device())).unsqueeze(1);
      g = where(is_pad, zeros_like(g), g);
    }
    Tensor gw = zeros(shape, {dtype, g.device()});
    kernels::index_add(gw.device(), gw, 0, idx, g);
    return std::vector<Tensor>{gw};
  });
}

void dropout(Tensor& out, const Tensor& x, const Tensor& mask, double scale) {
  if (!any_requires_grad({&x})) return;
  SavedTensor smask(mask, "DropoutBackward");
  set_history(out, "DropoutBackward", {&x}, [smask, scale, dtype = x.dtype()](const Tensor& grad) {
    Tensor keep = smask.get();
    Tensor g = grad.to(dtype).contiguous();
    Tensor grad_in = Tensor::empty(g.sizes(), dtype, g.device());
    kernels::dropout_backward(g.device(), g, keep, scale, grad_in);
    return std::vector<Tensor>{grad_in};
  });
}

void nll_loss(Tensor& out, const Tensor& log_probs, const Tensor& target, const Tensor& weight_per_sample,
              Reduction reduction, double total_weight) {
  if (!any_requires_grad({&log_probs})) return;
  SavedTensor starget(target, "NllLossBackward"), sweight(weight_per_sample, "NllLossBackward");
  set_history(out, "NllLossBackward", {&log_probs},
              [starget, sweight, reduction, total_weight, shape = log_probs.sizes(),
               dtype = log_probs.dtype()](const Tensor& grad) {
    Tensor w = sweight.get();
    Tensor flat_target = starget.get().reshape({-1}).to(kInt64);
    Tensor safe_target = where(w > 0.0, flat_target, zeros_like(flat_target));
    const int64_t samples = w.numel();
    Tensor per_sample;
    switch (reduction) {
      case Reduction::None: per_sample = grad.reshape({samples}); break;
      case Reduction::Sum: per_sample = grad.reshape({1}).expand({samples}); break;
      case Reduction::Mean: per_sample = grad.reshape({1}).expand({samples}) / total_weight; break;
    }
    Tensor values = -(per_sample.to(dtype) * w);  // (samples)
    // Rows layout (N, d..., C), scattered, then moved back to (N, C, d...).
    Shape rows_shape;
    if (shape.size() == 1) {
      rows_shape = {1, shape[0]};
    } else {
      rows_shape.push_back(shape[0]);
      for (size_t d = 2; d < shape.size(); ++d) rows_shape.push_back(shape[d]);
      rows_shape.push_back(shape[1]);
    }
    const int64_t C = rows_shape.back();
    Tensor grad_rows = scatter_add(zeros({samples, C}, {dtype, w.device()}), 1, safe_target.unsqueeze(1),
                                   values.unsqueeze(1).contiguous());
    Tensor g = grad_rows.reshape(rows_shape);
    if (shape.size() == 1) return std::vector<Tensor>{g.reshape(shape)};
    Shape back{0, static_cast<int64_t>(rows_shape.size()) - 1};
    for (size_t d = 1; d + 1 < rows_shape.size(); ++d) back.push_back(static_cast<int64_t>(d));
    return std::vector<Tensor>{g.permute(back).contiguous()};
  });
}

void cross_entropy(Tensor& out, const Tensor& logits, const Tensor& target, const Tensor& logsumexp,
                   int64_t ignore_index, double label_smoothing, double grad_scale) {
  if (!any_requires_grad({&logits})) return;
  SavedTensor slogits(logits, "CrossEntropyBackward"), starget(target, "CrossEntropyBackward");
  SavedTensor slse(logsumexp, "CrossEntropyBackward");
  set_history(out, "CrossEntropyBackward", {&logits},
              [slogits, starget, slse, ignore_index, label_smoothing, grad_scale](const Tensor& grad) {
    Tensor x = slogits.get(), lse = slse.get();
    Tensor g = grad.to(lse.dtype()).reshape({-1}).contiguous();  // (rows), or (1) for a reduced loss
    Tensor gx = Tensor::empty(x.sizes(), x.dtype(), x.device());
    kernels::cross_entropy_backward(x.device(), g, grad_scale, x, starget.get(), lse, ignore_index, label_smoothing,
                                    gx);
    return std::vector<Tensor>{gx};
  });
}

// ---- indexing ----

void cat(Tensor& out, const std::vector<Tensor>& inputs, int64_t dim) {
  if (!any_requires_grad(inputs)) return;
  std::vector<int64_t> sizes;
  std::vector<DType> dtypes;
  std::vector<bool> needs;
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : inputs) {
    sizes.push_back(t.size(dim));
    dtypes.push_back(t.dtype());
    needs.push_back(t.requires_grad());
    pointers.push_back(&t);
  }
  set_history(out, "CatBackward", pointers, [sizes, dtypes, needs, dim](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      grads.push_back(needs[i] ? g.narrow(dim, offset, sizes[i]).to(dtypes[i]) : Tensor());
      offset += sizes[i];
    }
    return grads;
  });
}

void index_select(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sidx(index, "IndexSelectBackward");
  set_history(out, "IndexSelectBackward", {&x}, [sidx, dim, shape = x.sizes()](const Tensor& g) {
    Shape full = shape.empty() ? Shape{1} : shape;
    Tensor gx = index_add(zeros(full, {g.dtype(), g.device()}), dim, sidx.get(), g.reshape(
        [&] { Shape s = full; s[dim] = sidx.get().numel(); return s; }()));
    return std::vector<Tensor>{gx.reshape(shape)};
  });
}

void gather(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sidx(index, "GatherBackward");
  set_history(out, "GatherBackward", {&x}, [sidx, dim, shape = x.sizes()](const Tensor& g) {
    return std::vector<Tensor>{scatter_add(zeros(shape, {g.dtype(), g.device()}), dim, sidx.get(), g.contiguous())};
  });
}

void index_add(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  if (!any_requires_grad({&x, &source})) return;
  SavedTensor sidx(index, "IndexAddBackward");
  bool need_x = x.requires_grad(), need_source = source.requires_grad();
  set_history(out, "IndexAddBackward", {&x, &source}, [sidx, dim, need_x, need_source](const Tensor& g) {
    return std::vector<Tensor>{need_x ? g : Tensor(), need_source ? g.index_select(dim, sidx.get()) : Tensor()};
  });
}

void scatter_add(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  if (!any_requires_grad({&x, &source})) return;
  SavedTensor sidx(index, "ScatterAddBackward");
  bool need_x = x.requires_grad(), need_source = source.requires_grad();
  set_history(out, "ScatterAddBackward", {&x, &source},
              [sidx, dim, need_x, need_source, source_shape = source.sizes()](const Tensor& g) {
    Tensor gs;
    if (need_source) {
      Tensor idx = sidx.get();
      Tensor picked = g.gather(dim, idx);  // index-shaped; source elements beyond it get zero
      gs = zeros(source_shape, {g.dtype(), g.device()});
      Tensor region = gs;
      for (int64_t d = 0; d < idx.dim(); ++d) region = region.narrow(d, 0, idx.size(d));
      region.copy_(picked);
    }
    return std::vector<Tensor>{need_x ? g : Tensor(), gs};
  });
}

}  // namespace accel::autograd::record
