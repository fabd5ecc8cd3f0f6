// `accel estimate-memory`: per-rank training memory before a run, as `accelerate estimate-memory`
// answers it, by the ZeRO paper's formulas (distributed/memory_estimate.h):
//   accel estimate-memory --params 7.5B --num_processes 64           all four ZeRO stages
//   accel estimate-memory --model DIR --zero_stage 2 --dtype fp32    one stage, Ψ from DIR/config.json
//   accel estimate-memory --model DIR --batch-size 32 --seq-len 128  plus BERT's saved activations
// --json prints one JSON object per stage instead of the table. It estimates, it does not
// measure: no model is built and nothing is allocated.
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "distributed/memory_estimate.h"
#include "models/bert_memory.h"
#include "tools/commands.h"

namespace accel::tools {

namespace {

struct EstimateArgs {
  std::string model_dir;
  std::string params;
  std::string dtype = "fp16";
  std::optional<int> zero_stage;
  int64_t num_processes = 1;
  std::optional<int64_t> batch_size, seq_len;
  bool json = false;
};

// Decimal units (1 GB = 1e9 bytes), one decimal.
std::string human_bytes(int64_t bytes) {
  static const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 999.95 && unit < 5) {
    value /= 1000.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) std::snprintf(text, sizeof(text), "%lld B", static_cast<long long>(bytes));
  else std::snprintf(text, sizeof(text), "%.1f %s", value, units[unit]);
  return text;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string describe_dtype(const std::string& dtype, const distributed::StateBytesPerParameter& b) {
  std::ostringstream out;
  if (dtype == "fp32") out << "fp32 Adam: p = " << b.parameter << ", g = " << b.gradient << ", K = " << b.optimizer
                           << " bytes per parameter (Adam m + v; the fp32 weights are the masters)";
  else out << dtype << " mixed-precision Adam: p = " << b.parameter << ", g = " << b.gradient << ", K = "
           << b.optimizer << " bytes per parameter (fp32 master + Adam m + v)";
  return out.str();
}

void print_activations(const models::ActivationEstimate& estimate, const EstimateArgs& args) {
  auto list = [](const std::vector<models::SavedActivation>& tensors) {
    for (const auto& t : tensors) std::cout << "    " << std::setw(10) << human_bytes(t.bytes) << "  " << t.description << "\n";
  };
  std::cout << "\nActivations (an estimate): the tensors accel's BERT saves for backward in one training forward,\n"
            << "per rank, batch " << *args.batch_size << " x sequence " << *args.seq_len << ", "
            << (args.dtype == "fp32" ? "fp32" : args.dtype + " autocast") << ", dropout as in the config:\n";
  std::cout << "  embeddings\n";
  list(estimate.embeddings);
  std::cout << "  each encoder layer but the last (" << human_bytes(estimate.per_layer_bytes()) << " x "
            << estimate.num_encoder_layers - 1 << " layers)\n";
  list(estimate.per_encoder_layer);
  std::cout << "  the last encoder layer, which computes position 0 alone for the pooler ("
            << human_bytes(estimate.last_layer_bytes()) << ")\n";
  list(estimate.last_encoder_layer);
  std::cout << "  pooler, classifier and loss\n";
  list(estimate.head);
  std::cout << "  total activations: " << human_bytes(estimate.total_bytes()) << " (" << with_commas(estimate.total_bytes())
            << " bytes). Not counted: backward's temporaries, the inputs, allocator overhead.\n";
}

int run_estimate(const EstimateArgs& args) {
  ACCEL_CHECK(args.model_dir.empty() != args.params.empty(), "accel estimate-memory: pass exactly one of --model DIR "
              "(a Hugging Face BERT directory) and --params N (such as 7.5e9 or 110M)");
  const distributed::StateBytesPerParameter bytes = distributed::adam_state_bytes(args.dtype);
  ACCEL_CHECK(args.num_processes >= 1, "accel estimate-memory: --num_processes must be at least 1, got ",
              args.num_processes);
  ACCEL_CHECK(!args.zero_stage || (*args.zero_stage >= 0 && *args.zero_stage <= 3),
              "accel estimate-memory: --zero_stage must be 0, 1, 2 or 3, got ", args.zero_stage.value_or(0));
  ACCEL_CHECK(args.batch_size.has_value() == args.seq_len.has_value(), "accel estimate-memory: activations need "
              "both --batch-size and --seq-len, got only ", args.batch_size ? "--batch-size" : "--seq-len");
  const bool with_activations = args.batch_size.has_value();
  ACCEL_CHECK(!with_activations || !args.model_dir.empty(), "accel estimate-memory: --batch-size and --seq-len "
              "estimate BERT activations and need --model DIR for the shapes");

  int64_t num_parameters = 0;
  std::string source;
  std::optional<models::ActivationEstimate> activations;
  if (!args.model_dir.empty()) {
    const std::string config_path = (std::filesystem::path(args.model_dir) / "config.json").string();
    const models::BertConfig config = models::BertConfig::from_file(config_path);
    num_parameters = models::bert_for_sequence_classification_num_parameters(config);
    source = "counted from " + config_path + " as BertForSequenceClassification with " +
             std::to_string(config.num_labels) + " labels";
    if (with_activations) {
      activations = models::bert_training_activations(config, *args.batch_size, *args.seq_len, args.dtype != "fp32");
    }
  } else {
    num_parameters = distributed::parse_parameter_count(args.params);
    source = "--params " + args.params;
  }
  const int64_t activation_bytes = activations ? activations->total_bytes() : 0;

  std::vector<int> stages = args.zero_stage ? std::vector<int>{*args.zero_stage} : std::vector<int>{0, 1, 2, 3};
  std::vector<distributed::ModelStateMemory> rows;
  for (int stage : stages) {
    rows.push_back(distributed::zero_model_state_memory(num_parameters, args.num_processes, stage, bytes));
  }

  if (args.json) {
    for (const auto& row : rows) {
      nlohmann::ordered_json line = {
          {"zero_stage", row.zero_stage}, {"num_parameters", num_parameters}, {"num_processes", args.num_processes},
          {"dtype", args.dtype},
          {"bytes_per_parameter", {{"parameters", bytes.parameter}, {"gradients", bytes.gradient},
                                   {"optimizer_states", bytes.optimizer}}},
          {"parameters_bytes", row.parameter_bytes}, {"gradients_bytes", row.gradient_bytes},
          {"optimizer_states_bytes", row.optimizer_bytes}, {"model_states_bytes", row.total_bytes()}};
      if (activations) {
        line["batch_size"] = *args.batch_size;
        line["seq_len"] = *args.seq_len;
        line["activations_bytes"] = activation_bytes;
      }
      line["total_bytes"] = row.total_bytes() + activation_bytes;
      std::cout << line.dump() << "\n";
    }
    return 0;
  }

  std::cout << "Model-state memory per rank under ZeRO (Rajbhandari et al. 2020), Adam:\n"
            << "  parameters (Ψ):  " << with_commas(num_parameters) << ", " << source << "\n"
            << "  processes (Nd):  " << args.num_processes << "\n"
            << "  dtype:           " << describe_dtype(args.dtype, bytes) << "\n";
  if (activations) print_activations(*activations, args);
  std::cout << "\n";
  std::vector<std::string> header = {"parameters", "gradients", "optimizer states"};
  if (activations) header.insert(header.end(), {"model states", "activations"});
  header.push_back("total per rank");
  std::cout << std::left << std::setw(6) << "stage" << std::right;
  for (const std::string& title : header) std::cout << std::setw(static_cast<int>(title.size()) + 3) << title;
  std::cout << "\n";
  for (const auto& row : rows) {
    std::vector<int64_t> cells = {row.parameter_bytes, row.gradient_bytes, row.optimizer_bytes};
    if (activations) cells.insert(cells.end(), {row.total_bytes(), activation_bytes});
    cells.push_back(row.total_bytes() + activation_bytes);
    std::cout << std::left << std::setw(6) << row.zero_stage << std::right;
    for (size_t i = 0; i < cells.size(); ++i) {
      std::cout << std::setw(static_cast<int>(header[i].size()) + 3) << human_bytes(cells[i]);
    }
    std::cout << "\n";
  }
  std::cout << "\nGB = 1e9 bytes. Stage 0: (p+g+K)Ψ; 1: (p+g)Ψ + KΨ/Nd; 2: pΨ + (g+K)Ψ/Nd; 3: (p+g+K)Ψ/Nd.\n"
            << "Temporary buffers, communication buckets and fragmentation come on top.\n";
  return 0;
}

}  // namespace

void add_estimate_memory_command(CLI::App& app) {
  auto args = std::make_shared<EstimateArgs>();
  CLI::App* cmd = app.add_subcommand("estimate-memory", "Per-rank training memory by the ZeRO paper's formulas");
  auto* model = cmd->add_option("--model", args->model_dir, "A Hugging Face BERT directory (its config.json gives Ψ)");
  auto* params = cmd->add_option("--params", args->params, "Number of parameters Ψ: 7.5e9, 7500000000, 7.5B, 110M");
  model->excludes(params);
  cmd->add_option("--dtype", args->dtype, "fp16 or bf16 (mixed-precision Adam, the default) or fp32");
  cmd->add_option("--zero_stage,--zero-stage", args->zero_stage, "Only this ZeRO stage (0-3); default: all four");
  cmd->add_option("--num_processes,--num-processes", args->num_processes, "Number of ranks Nd (default 1)");
  cmd->add_option("--batch-size,--batch_size", args->batch_size, "Per-rank batch size, for activations (needs --model)");
  cmd->add_option("--seq-len,--seq_len", args->seq_len, "Sequence length, for activations (needs --model)");
  cmd->add_flag("--json", args->json, "One JSON object per stage (bytes) instead of the table");
  register_action(cmd, [args] { return run_estimate(*args); });
}

}  // namespace accel::tools
