// The training program of the Hugging Face Accelerate guide (../shared/ACCELERATE_GUIDE.md),
// in C++ with accel, section for section: an Accelerator; tokenizer and model from a
// pretrained directory; GLUE MRPC tokenized into a data loader; AdamW; prepare; a training
// loop with accelerator.backward and a linear schedule; evaluation with gather_for_metrics.
//
//   build/bin/example_accelerate_guide MODEL_DIR TRAIN_TSV DEV_TSV [EPOCHS] [MAX_EXAMPLES]
#include <iostream>
#include <string>

#include "accelerate/accelerator.h"
#include "accelerate/metrics.h"
#include "core/autograd/grad_mode.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"

using namespace accel;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR TRAIN_TSV DEV_TSV [EPOCHS] [MAX_EXAMPLES]\n";
    return 2;
  }
  const std::string checkpoint = argv[1];
  const int64_t epochs = argc > 4 ? std::stoll(argv[4]) : 3;
  const size_t max_examples = argc > 5 ? std::stoull(argv[5]) : SIZE_MAX;
  try {
    // 4. Core usage: the Accelerator, the tokenizer and the model.
    Accelerator accelerator;
    models::BertTokenizer tokenizer = models::BertTokenizer::from_pretrained(checkpoint);
    auto model = models::bert_classifier_from_pretrained(checkpoint, {.num_labels = 2});

    // The data: GLUE MRPC, tokenized as sentence pairs with truncation.
    data::TextDataset train = data::read_glue_mrpc(argv[2]), dev = data::read_glue_mrpc(argv[3]);
    if (train.examples.size() > max_examples) train.examples.resize(max_examples);
    if (dev.examples.size() > max_examples) dev.examples.resize(max_examples);
    models::EncodeOptions truncate{.truncation = models::Truncation::longest_first, .max_length = 128};
    auto tokenize_fn = [&](const data::Example& e) {
      models::Encoding encoded = tokenizer.encode(e.text_a, *e.text_b, truncate);
      return data::Features{encoded.input_ids, encoded.token_type_ids, e.label};
    };
    auto tokenized_train = std::make_shared<const std::vector<data::Features>>(data::map_examples(train, tokenize_fn));
    auto tokenized_dev = std::make_shared<const std::vector<data::Features>>(data::map_examples(dev, tokenize_fn));
    auto train_dataloader = std::make_shared<data::DataLoader>(
        tokenized_train, data::DataLoaderOptions{.batch_size = 16, .shuffle = true, .pad_token_id = tokenizer.pad_token_id()});
    auto eval_dataloader = std::make_shared<data::DataLoader>(
        tokenized_dev, data::DataLoaderOptions{.batch_size = 64, .pad_token_id = tokenizer.pad_token_id()});

    // [snippet:training_loop]
    // The optimizer, then prepare everything for the device and the processes.
    auto optimizer = std::make_shared<nn::AdamW>(model->parameters(),
                                                 nn::AdamWOptions{.lr = 5e-5});
    auto [prepared_model, prepared_optimizer, prepared_train, prepared_eval] =
        accelerator.prepare(model, optimizer, train_dataloader, eval_dataloader);

    // 5. The training loop with a linear schedule.
    const int64_t num_training_steps = prepared_train->size() * epochs;
    auto lr_scheduler = accelerator.prepare(std::make_shared<nn::LRScheduler>(
        nn::linear_schedule_with_warmup(*optimizer, 0, num_training_steps)));
    auto& scheduler = std::get<0>(lr_scheduler);
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
      model->train();
      for (auto& batch : *prepared_train) {
        Tensor loss = model->forward(batch.input_ids, batch.attention_mask,
                                     batch.token_type_ids, batch.labels).loss;
        accelerator.backward(loss);  // handles scaling in mixed precision
        prepared_optimizer->step();
        scheduler->step();
        prepared_optimizer->zero_grad();
      }
      accelerator.print("Epoch ", epoch, " complete");
    }
    // [end]

    // 6. Evaluation: gather predictions from every process, drop the padding duplicates.
    model->eval();
    std::vector<int64_t> predictions, references;
    for (auto& batch : *prepared_eval) {
      NoGradGuard no_grad;
      Tensor logits = model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits;
      for (int64_t p : accelerator.gather_for_metrics(argmax(logits, -1)).to_vector<int64_t>()) predictions.push_back(p);
      for (int64_t r : accelerator.gather_for_metrics(batch.labels).to_vector<int64_t>()) references.push_back(r);
    }
    accelerator.print("{'accuracy': ", metrics::accuracy(predictions, references),
                      ", 'f1': ", metrics::f1(predictions, references), "}");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << argv[0] << ": error: " << e.what() << "\n";
    return 1;
  }
}
