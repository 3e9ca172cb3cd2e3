// Detection of personal data in text: e-mail addresses and payment card
// numbers (13 to 19 digits, optionally grouped by spaces or dashes, that
// pass the Luhn check). Offsets are byte offsets into the scanned text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sb::safety {

struct PiiFinding {
  std::string category;  // "pii.email" or "pii.card_number"
  size_t start = 0;
  size_t end = 0;  // exclusive
};

std::vector<PiiFinding> FindPii(std::string_view text);

// Where personal data may still be in progress at the end of `text`: the
// smallest offset from which more text could complete or extend a match
// (an e-mail address or card number that has begun, or one that is
// complete but could go on); text.size() when nothing could. Everything
// before it can be released as far as these rules go.
size_t PiiPending(std::string_view text);

bool LuhnValid(std::string_view digits);

}  // namespace sb::safety
