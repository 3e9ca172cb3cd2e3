#include "safety/pii.h"

#include <algorithm>
#include <cctype>

namespace sb::safety {
namespace {

bool IsLocalChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '%' ||
         c == '+' || c == '-';
}

bool IsDomainChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
}

void FindEmails(std::string_view text, std::vector<PiiFinding>& out) {
  size_t search = 0;
  while (true) {
    const size_t at = text.find('@', search);
    if (at == std::string_view::npos) return;
    search = at + 1;
    size_t start = at;
    while (start > 0 && IsLocalChar(text[start - 1])) --start;
    size_t end = at + 1;
    while (end < text.size() && IsDomainChar(text[end])) ++end;
    // Trailing dots and dashes end a sentence, not a domain.
    while (end > at + 1 && (text[end - 1] == '.' || text[end - 1] == '-')) --end;
    if (start == at || end == at + 1) continue;
    const std::string_view domain = text.substr(at + 1, end - at - 1);
    const size_t last_dot = domain.rfind('.');
    if (last_dot == std::string_view::npos || last_dot == 0) continue;
    const std::string_view tld = domain.substr(last_dot + 1);
    if (tld.size() < 2 || !std::all_of(tld.begin(), tld.end(), [](char c) {
          return std::isalpha(static_cast<unsigned char>(c));
        })) {
      continue;
    }
    out.push_back({"pii.email", start, end});
    search = end;
  }
}

void FindCards(std::string_view text, std::vector<PiiFinding>& out) {
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i])) ||
        (i > 0 && std::isalnum(static_cast<unsigned char>(text[i - 1])))) {
      ++i;
      continue;
    }
    // A run of digits, single spaces and single dashes between digits.
    std::string digits;
    size_t j = i;
    size_t last_digit_end = i;
    while (j < text.size()) {
      const char c = text[j];
      if (std::isdigit(static_cast<unsigned char>(c))) {
        digits.push_back(c);
        last_digit_end = j + 1;
        ++j;
      } else if ((c == ' ' || c == '-') && j + 1 < text.size() &&
                 std::isdigit(static_cast<unsigned char>(text[j + 1]))) {
        ++j;
      } else {
        break;
      }
    }
    const bool bounded = last_digit_end == text.size() ||
                         !std::isalnum(static_cast<unsigned char>(text[last_digit_end]));
    if (bounded && digits.size() >= 13 && digits.size() <= 19 && LuhnValid(digits)) {
      out.push_back({"pii.card_number", i, last_digit_end});
    }
    i = std::max(last_digit_end, i + 1);
  }
}

}  // namespace

bool LuhnValid(std::string_view digits) {
  if (digits.empty()) return false;
  int sum = 0;
  bool twice = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (!std::isdigit(static_cast<unsigned char>(*it))) return false;
    int d = *it - '0';
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

size_t PiiPending(std::string_view text) {
  // An e-mail address: the trailing run of characters one can hold (any
  // word may be the local part of an address still to come).
  size_t email = text.size();
  while (email > 0 && (IsLocalChar(text[email - 1]) || text[email - 1] == '@')) --email;
  // A card number: the trailing run of digits, spaces and dashes, from its
  // first digit.
  size_t run = text.size();
  while (run > 0 && (std::isdigit(static_cast<unsigned char>(text[run - 1])) ||
                     text[run - 1] == ' ' || text[run - 1] == '-')) {
    --run;
  }
  while (run < text.size() && !std::isdigit(static_cast<unsigned char>(text[run]))) ++run;
  return std::min(email, run);
}

std::vector<PiiFinding> FindPii(std::string_view text) {
  std::vector<PiiFinding> out;
  FindEmails(text, out);
  FindCards(text, out);
  std::sort(out.begin(), out.end(),
            [](const PiiFinding& a, const PiiFinding& b) { return a.start < b.start; });
  return out;
}

}  // namespace sb::safety
