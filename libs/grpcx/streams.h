// Streaming on gRPC's callback API, with no thread per stream.
//
// ServerStream<T>: a server-streaming reactor fed from any thread through a
// bounded queue, with one write in flight at a time. Producers hold a
// shared_ptr<ServerStream<T>::Handle>, which stays valid after the call has
// ended (Push then returns false), so that a producer never touches a
// reactor gRPC has already destroyed.
//
//   grpc::ServerWriteReactor<Event>* MyService::Watch(ctx, req) {
//     auto [reactor, handle] = ServerStream<Event>::Create(/*capacity=*/64);
//     handle->SetOnCancel([job] { job->Stop(); });
//     producer.Attach(handle);   // calls handle->Push(...), then Finish(...)
//     return reactor;
//   }
//
// ClientStream<Resp>: reads a server stream one message at a time. Each
// message goes to `on_message` with a `next` callback; the consumer calls
// next(true) when it is ready for the following message, or next(false) to
// cancel the call. `on_done` runs once, last, with the call's status.
#pragma once

#include <chrono>
#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/server_callback.h>

namespace sb {

template <typename T>
class ServerStream {
 public:
  class Handle;

 private:
  class Reactor;

 public:
  static std::pair<grpc::ServerWriteReactor<T>*, std::shared_ptr<Handle>> Create(size_t capacity) {
    auto handle = std::shared_ptr<Handle>(new Handle(capacity));
    auto* reactor = new Reactor(handle);
    handle->reactor_ = reactor;
    return {reactor, handle};
  }

  class Handle {
   public:
    // False when the queue is full (wait for the on-space callback) or the
    // call has ended.
    bool Push(T msg) {
      std::lock_guard<std::mutex> lock(mu_);
      if (reactor_ == nullptr || finishing_ || queue_.size() >= capacity_) return false;
      queue_.push_back(std::move(msg));
      MaybeWrite();
      return true;
    }
    // Ends the call once everything queued has been written.
    void Finish(grpc::Status status) {
      std::lock_guard<std::mutex> lock(mu_);
      if (reactor_ == nullptr || finishing_) return;
      finishing_ = true;
      status_ = std::move(status);
      MaybeWrite();
    }
    bool ended() const {
      std::lock_guard<std::mutex> lock(mu_);
      return reactor_ == nullptr || finishing_;
    }
    bool has_space() const { return space() > 0; }
    size_t space() const {
      std::lock_guard<std::mutex> lock(mu_);
      return capacity_ - std::min(capacity_, queue_.size());
    }
    // Runs once if the client cancels or goes away before Finish.
    void SetOnCancel(std::function<void()> fn) {
      std::lock_guard<std::mutex> lock(mu_);
      on_cancel_ = std::move(fn);
    }
    // Runs (without the lock) each time a write completes and the queue
    // has room again.
    void SetOnSpace(std::function<void()> fn) {
      std::lock_guard<std::mutex> lock(mu_);
      on_space_ = std::move(fn);
    }

   private:
    friend class ServerStream;
    explicit Handle(size_t capacity) : capacity_(capacity) {}

    // Requires mu_.
    void MaybeWrite() {
      if (writing_ || reactor_ == nullptr) return;
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
        reactor_->StartWrite(&current_);
      } else if (finishing_ && !finished_) {
        finished_ = true;
        reactor_->Finish(status_);
      }
    }

    mutable std::mutex mu_;
    size_t capacity_;
    std::deque<T> queue_;
    T current_;
    Reactor* reactor_ = nullptr;
    bool writing_ = false;
    bool finishing_ = false;
    bool finished_ = false;
    grpc::Status status_;
    std::function<void()> on_cancel_;
    std::function<void()> on_space_;
  };

 private:
  class Reactor final : public grpc::ServerWriteReactor<T> {
   public:
    explicit Reactor(std::shared_ptr<Handle> handle) : handle_(std::move(handle)) {}

    void OnWriteDone(bool ok) override {
      std::function<void()> notify;
      {
        std::lock_guard<std::mutex> lock(handle_->mu_);
        handle_->writing_ = false;
        if (!ok) {
          // The client is gone: drop what is queued and end, and tell the
          // producer as a cancel does.
          handle_->queue_.clear();
          handle_->finishing_ = true;
          if (!handle_->finished_) {
            handle_->finished_ = true;
            this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
          }
          notify = std::move(handle_->on_cancel_);
          handle_->on_cancel_ = nullptr;
        }
      }
      if (!ok) {
        if (notify) notify();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(handle_->mu_);
        handle_->MaybeWrite();
        if (handle_->queue_.size() < handle_->capacity_ && !handle_->finishing_) {
          notify = handle_->on_space_;
        }
      }
      if (notify) notify();
    }

    void OnCancel() override {
      std::function<void()> cancel;
      {
        std::lock_guard<std::mutex> lock(handle_->mu_);
        cancel = std::move(handle_->on_cancel_);
        handle_->on_cancel_ = nullptr;
        handle_->queue_.clear();
        if (!handle_->finished_ && !handle_->writing_) {
          handle_->finished_ = true;
          handle_->finishing_ = true;
          this->Finish(grpc::Status::CANCELLED);
        }
        handle_->finishing_ = true;
      }
      if (cancel) cancel();
    }

    void OnDone() override {
      {
        std::lock_guard<std::mutex> lock(handle_->mu_);
        handle_->reactor_ = nullptr;
        handle_->on_space_ = nullptr;
        handle_->on_cancel_ = nullptr;
      }
      delete this;
    }

   private:
    std::shared_ptr<Handle> handle_;
  };
};

template <typename Resp>
class ClientStream final : public grpc::ClientReadReactor<Resp> {
 public:
  using Next = std::function<void(bool more)>;
  using MessageFn = std::function<void(Resp&& msg, Next next)>;
  using DoneFn = std::function<void(const grpc::Status& status)>;

  // Cancels the call from outside (e.g. the downstream client left). Safe to
  // call at any time, also after the call ended.
  class Canceller {
   public:
    void Cancel() {
      std::lock_guard<std::mutex> lock(mu_);
      if (ctx_ != nullptr) ctx_->TryCancel();
    }

   private:
    friend class ClientStream;
    std::mutex mu_;
    grpc::ClientContext* ctx_ = nullptr;
  };

  // `start(ctx, reactor)` makes the call, e.g.
  //   [&](grpc::ClientContext* c, grpc::ClientReadReactor<Event>* r) {
  //     stub->async()->Generate(c, &request, r);   // request must outlive the call
  //   }
  // The request object must stay alive until on_done: keep it in the
  // captured state of the callbacks or pass it through `keep_alive`.
  static std::shared_ptr<Canceller> Start(
      std::chrono::system_clock::time_point deadline,
      const std::function<void(grpc::ClientContext*, grpc::ClientReadReactor<Resp>*)>& start,
      MessageFn on_message, DoneFn on_done, std::shared_ptr<void> keep_alive = nullptr) {
    auto* s = new ClientStream(std::move(on_message), std::move(on_done), std::move(keep_alive));
    s->ctx_.set_deadline(deadline);
    auto canceller = s->canceller_;
    canceller->ctx_ = &s->ctx_;
    start(&s->ctx_, s);
    s->AddHold();  // released when the last read fails: reads may start outside reactions
    s->StartRead(&s->msg_);
    s->StartCall();
    return canceller;
  }

  grpc::ClientContext* context() { return &ctx_; }

  void OnReadDone(bool ok) override {
    if (!ok) {
      this->RemoveHold();
      return;
    }
    on_message_(std::move(msg_), [this](bool more) {
      if (!more) ctx_.TryCancel();
      msg_ = Resp();
      this->StartRead(&msg_);  // fails at once after a cancel
    });
  }

  void OnDone(const grpc::Status& status) override {
    {
      std::lock_guard<std::mutex> lock(canceller_->mu_);
      canceller_->ctx_ = nullptr;
    }
    on_done_(status);
    delete this;
  }

 private:
  ClientStream(MessageFn on_message, DoneFn on_done, std::shared_ptr<void> keep_alive)
      : on_message_(std::move(on_message)),
        on_done_(std::move(on_done)),
        keep_alive_(std::move(keep_alive)),
        canceller_(std::make_shared<Canceller>()) {}

  grpc::ClientContext ctx_;
  Resp msg_;
  MessageFn on_message_;
  DoneFn on_done_;
  std::shared_ptr<void> keep_alive_;
  std::shared_ptr<Canceller> canceller_;
};

}  // namespace sb
