#include "cancel.h"

#include <utility>

namespace bnn {

namespace {
thread_local std::shared_ptr<CancelToken> current_token;  // owns the token while it is bound
}  // namespace

CancelToken* current_cancel_token() noexcept { return current_token.get(); }

std::shared_ptr<CancelToken> set_cancel_token(std::shared_ptr<CancelToken> token) {
  return std::exchange(current_token, std::move(token));
}

}  // namespace bnn
