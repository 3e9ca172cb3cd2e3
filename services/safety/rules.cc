#include "safety/rules.h"

#include <algorithm>
#include <array>

#include "safety/normalize.h"

namespace sb::safety {
namespace {

// Normalised text is case folded: letters are lower case here.
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsAlnum(char c) { return IsDigit(c) || IsLower(c) || (c >= 'A' && c <= 'Z'); }

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}
// `s` could still become something that starts with `prefix`.
bool CouldStartWith(std::string_view s, std::string_view prefix) {
  const size_t n = std::min(s.size(), prefix.size());
  return s.substr(0, n) == prefix.substr(0, n);
}

// ---- e-mail addresses --------------------------------------------------------

bool IsLocalChar(char c) {
  return IsAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}
bool IsDomainChar(char c) { return IsAlnum(c) || c == '.' || c == '-'; }

void FindEmails(std::string_view text, std::vector<Finding>& out) {
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
          return IsLower(c) || (c >= 'A' && c <= 'Z');
        })) {
      continue;
    }
    out.push_back({"pii.email", start, end});
    search = end;
  }
}

size_t EmailPending(std::string_view text) {
  // Any trailing word may be the local part of an address still to come.
  size_t at = text.size();
  while (at > 0 && (IsLocalChar(text[at - 1]) || text[at - 1] == '@')) --at;
  return at;
}

// ---- runs of digits: cards, SSNs, phone numbers ------------------------------

bool IsSeparator(char c) { return c == ' ' || c == '-' || c == '.'; }
bool IsRunChar(char c) { return IsDigit(c) || IsSeparator(c) || c == '(' || c == ')' || c == '+'; }

struct Run {
  size_t start = 0, end = 0;
  std::string digits;
  std::vector<size_t> groups;  // lengths of the digit groups
  std::string separators;      // between groups, in order
  bool plus = false, parens = false;
};

// "(212)": the only place parentheses belong in a run.
bool IsAreaCode(std::string_view text, size_t j) {
  return j + 4 < text.size() && text[j] == '(' && IsDigit(text[j + 1]) && IsDigit(text[j + 2]) &&
         IsDigit(text[j + 3]) && text[j + 4] == ')';
}

// The run that starts at `i` (a digit, "+" or "(ddd)" not after a letter or
// digit): digit groups, a leading "+", an area code in parentheses, and
// single separators between groups.
Run ReadRun(std::string_view text, size_t i) {
  Run r;
  r.start = i;
  size_t j = i;
  size_t group = 0;
  auto close_group = [&] {
    if (group > 0) r.groups.push_back(group);
    group = 0;
  };
  while (j < text.size()) {
    const char c = text[j];
    if (IsDigit(c)) {
      r.digits.push_back(c);
      ++group;
      r.end = ++j;
    } else if (c == '+' && j == i) {
      r.plus = true;
      ++j;
    } else if (c == '(' && group == 0 && IsAreaCode(text, j)) {
      r.digits.append(text.substr(j + 1, 3));
      r.groups.push_back(3);
      r.parens = true;
      r.end = j += 5;
    } else if (IsSeparator(c) && (group > 0 || (r.parens && r.end == j)) && j + 1 < text.size() &&
               (IsDigit(text[j + 1]) || IsAreaCode(text, j + 1))) {
      close_group();  // after a group, or after "(212)"
      r.separators.push_back(c);
      ++j;
    } else {
      break;
    }
  }
  close_group();
  return r;
}

bool IsCard(const Run& r) {
  return !r.plus && !r.parens && r.digits.size() >= 13 && r.digits.size() <= 19 &&
         r.digits[0] >= '2' && r.digits[0] <= '6' && LuhnValid(r.digits);
}

bool IsSsn(const Run& r) {
  if (r.plus || r.parens || r.groups != std::vector<size_t>{3, 2, 4}) return false;
  if (r.separators.size() != 2 || r.separators[0] != r.separators[1] || r.separators[0] == '.')
    return false;
  const std::string_view d = r.digits;
  return d.substr(0, 3) != "000" && d.substr(0, 3) != "666" && d[0] != '9' &&
         d.substr(3, 2) != "00" && d.substr(5, 4) != "0000";
}

bool IsPhone(const Run& r) {
  // NANP: [1] NXX NXX XXXX, written in groups.
  const std::vector<size_t> nanp = {3, 3, 4}, nanp_one = {1, 3, 3, 4};
  const bool one = r.groups == nanp_one && r.digits[0] == '1';
  if (r.groups == nanp || one) {
    const size_t area = one ? 1 : 0;
    if (r.digits[area] >= '2' && r.digits[area + 3] >= '2') return true;
  }
  // E.164: "+", a country code, at most 15 digits.
  return r.plus && !r.parens && r.digits.size() >= 8 && r.digits.size() <= 15 && r.digits[0] != '0';
}

void FindRuns(std::string_view text, std::vector<Finding>& out) {
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    const bool starts = (IsDigit(c) || (c == '+' && i + 1 < text.size() && IsDigit(text[i + 1])) ||
                         IsAreaCode(text, i)) &&
                        (i == 0 || !IsAlnum(text[i - 1]));
    if (!starts) {
      ++i;
      continue;
    }
    const Run r = ReadRun(text, i);
    const bool bounded = r.end == text.size() || !IsAlnum(text[r.end]);
    if (bounded && !r.digits.empty()) {
      const char* category = IsCard(r)    ? "pii.card_number"
                             : IsSsn(r)   ? "pii.ssn"
                             : IsPhone(r) ? "pii.phone"
                                          : nullptr;
      if (category != nullptr) out.push_back({category, r.start, r.end});
    }
    i = std::max(r.end, i + 1);
  }
}

size_t RunPending(std::string_view text) {
  size_t at = text.size();
  while (at > 0 && IsRunChar(text[at - 1])) --at;
  while (at < text.size() && !(IsDigit(text[at]) || text[at] == '+' || text[at] == '(')) ++at;
  return at;
}

// ---- IBANs -------------------------------------------------------------------

constexpr size_t kIbanMin = 15, kIbanMax = 34;

bool StartsIban(std::string_view text, size_t i) {
  return i + 4 <= text.size() && IsLower(text[i]) && IsLower(text[i + 1]) && IsDigit(text[i + 2]) &&
         IsDigit(text[i + 3]) && (i == 0 || !IsAlnum(text[i - 1]));
}

void FindIbans(std::string_view text, std::vector<Finding>& out) {
  for (size_t i = 0; i + 4 <= text.size(); ++i) {
    if (!StartsIban(text, i)) continue;
    // Letters and digits, and single spaces between them; the longest
    // prefix ending at a group boundary that passes the check.
    std::string code;
    size_t best = 0;
    size_t j = i;
    while (j < text.size() && code.size() <= kIbanMax) {
      if (IsAlnum(text[j])) {
        code.push_back(text[j++]);
        const bool boundary = j == text.size() || !IsAlnum(text[j]);
        if (boundary && code.size() >= kIbanMin && code.size() <= kIbanMax && IbanValid(code))
          best = j;
      } else if (text[j] == ' ' && j + 1 < text.size() && IsAlnum(text[j + 1])) {
        ++j;
      } else {
        break;
      }
    }
    if (best > 0) {
      out.push_back({"pii.iban", i, best});
      i = best;
    }
  }
}

size_t IbanPending(std::string_view text) {
  size_t pending = text.size();
  // A match is at most 34 characters, a space between any two.
  const size_t most = 2 * kIbanMax;
  const size_t from = text.size() > most ? text.size() - most : 0;
  for (size_t s = text.size(); s-- > from;) {
    if (!IsAlnum(text[s]) || (s > 0 && IsAlnum(text[s - 1]))) continue;
    // Could text[s..] be the start of an IBAN still being written?
    size_t count = 0;
    bool viable = true;
    for (size_t k = s; k < text.size() && viable; ++k) {
      const char c = text[k];
      if (IsAlnum(c)) {
        viable = count >= 4 || (count < 2 ? IsLower(c) : IsDigit(c));
        ++count;
      } else {
        viable = c == ' ' && count >= 4 && text[k - 1] != ' ';
      }
    }
    if (viable && count <= kIbanMax) pending = s;
  }
  return pending;
}

// ---- secrets -----------------------------------------------------------------

bool IsKeyChar(char c) { return IsAlnum(c) || c == '_' || c == '-'; }

struct KeyShape {
  std::string_view prefix;
  size_t min_length;  // of the whole token
  size_t max_length;
  const char* category;
};

constexpr std::array<KeyShape, 12> kKeyShapes = {{
    {"sk-", 3 + 20, 512, "secret.api_key"},  // sk-sb-, sk-ant-, sk-proj-, ...
    {"ghp_", 4 + 36, 255, "secret.api_key"},
    {"gho_", 4 + 36, 255, "secret.api_key"},
    {"ghu_", 4 + 36, 255, "secret.api_key"},
    {"ghs_", 4 + 36, 255, "secret.api_key"},
    {"github_pat_", 11 + 22, 255, "secret.api_key"},
    {"xoxb-", 5 + 10, 255, "secret.api_key"},
    {"xoxp-", 5 + 10, 255, "secret.api_key"},
    {"xoxa-", 5 + 10, 255, "secret.api_key"},
    {"aiza", 39, 39, "secret.api_key"},
    {"akia", 20, 20, "secret.cloud_key"},
    {"asia", 20, 20, "secret.cloud_key"},
}};

void FindKeys(std::string_view text, std::vector<Finding>& out) {
  size_t i = 0;
  while (i < text.size()) {
    if (!IsKeyChar(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && IsKeyChar(text[j])) ++j;
    const std::string_view token = text.substr(i, j - i);
    for (const KeyShape& shape : kKeyShapes) {
      if (StartsWith(token, shape.prefix) && token.size() >= shape.min_length &&
          token.size() <= shape.max_length &&
          (shape.max_length != 20 || std::all_of(token.begin(), token.end(), IsAlnum))) {
        out.push_back({shape.category, i, j});
        break;
      }
    }
    i = j;
  }
}

size_t KeyPending(std::string_view text) {
  size_t at = text.size();
  while (at > 0 && IsKeyChar(text[at - 1])) --at;
  const std::string_view token = text.substr(at);
  if (token.empty()) return text.size();
  for (const KeyShape& shape : kKeyShapes) {
    if (CouldStartWith(token, shape.prefix) && token.size() <= shape.max_length) return at;
  }
  return text.size();
}

constexpr std::string_view kPemBegin = "-----begin ";
constexpr std::string_view kPemDashes = "-----";
constexpr std::string_view kPemPrivate = "private key";
constexpr size_t kPemKindMax = 40;  // "rsa ", "openssh ", "encrypted ", ...

// `kind` is what a header has between "-----begin " and "-----".
bool IsPrivateKeyKind(std::string_view kind) {
  return kind.size() <= kPemKindMax && kind.size() >= kPemPrivate.size() &&
         kind.substr(kind.size() - kPemPrivate.size()) == kPemPrivate &&
         std::all_of(kind.begin(), kind.end(), [](char c) { return IsLower(c) || c == ' '; });
}

void FindPrivateKeys(std::string_view text, std::vector<Finding>& out) {
  size_t search = 0;
  while (true) {
    const size_t at = text.find(kPemBegin, search);
    if (at == std::string_view::npos) return;
    search = at + 1;
    const size_t kind = at + kPemBegin.size();
    const size_t close = text.find(kPemDashes, kind);
    if (close == std::string_view::npos) return;
    if (IsPrivateKeyKind(text.substr(kind, close - kind))) {
      out.push_back({"secret.private_key", at, close + kPemDashes.size()});
      search = close + kPemDashes.size();
    }
  }
}

size_t PrivateKeyPending(std::string_view text) {
  const size_t most = kPemBegin.size() + kPemKindMax + kPemDashes.size();
  const size_t from = text.size() > most ? text.size() - most : 0;
  for (size_t s = from; s < text.size(); ++s) {
    if (text[s] != '-') continue;  // any dash: "------begin" holds "-----begin"
    const std::string_view rest = text.substr(s);
    if (rest.size() <= kPemBegin.size()) {
      if (CouldStartWith(rest, kPemBegin)) return s;
      continue;
    }
    if (!StartsWith(rest, kPemBegin)) continue;
    const std::string_view tail = rest.substr(kPemBegin.size());
    const size_t dash = tail.find('-');
    if (dash == std::string_view::npos) {
      if (tail.size() <= kPemKindMax &&
          std::all_of(tail.begin(), tail.end(), [](char c) { return IsLower(c) || c == ' '; })) {
        return s;
      }
      continue;
    }
    const std::string_view dashes = tail.substr(dash);
    if (dashes.size() < kPemDashes.size() && CouldStartWith(dashes, kPemDashes) &&
        IsPrivateKeyKind(tail.substr(0, dash))) {
      return s;
    }
  }
  return text.size();
}

}  // namespace

const std::vector<std::string>& Categories() {
  static const std::vector<std::string> categories = {
      "pii.email", "pii.card_number", "pii.phone",        "pii.iban",
      "pii.ssn",   "secret.api_key",  "secret.cloud_key", "secret.private_key"};
  return categories;
}

std::string Describe(std::string_view category) {
  if (category == "pii.email") return "an e-mail address";
  if (category == "pii.card_number") return "a payment card number";
  if (category == "pii.phone") return "a phone number";
  if (category == "pii.iban") return "a bank account number (IBAN)";
  if (category == "pii.ssn") return "a social security number";
  if (category == "secret.api_key") return "an API key";
  if (category == "secret.cloud_key") return "a cloud access key";
  if (category == "secret.private_key") return "a private key";
  if (category == "blocklist.term") return "a term this organization's policy blocks";
  if (category == "blocklist.pattern") return "text this organization's policy blocks";
  if (category == "injection.override") return "an attempt to override the model's instructions";
  if (category == "injection.role") return "text posing as a system or assistant turn";
  if (category == "input.size") return "more text than this organization's policy allows";
  return std::string(category);
}

bool LuhnValid(std::string_view digits) {
  if (digits.empty()) return false;
  int sum = 0;
  bool twice = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (!IsDigit(*it)) return false;
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

bool IbanValid(std::string_view code) {
  if (code.size() < kIbanMin || code.size() > kIbanMax) return false;
  // The first four characters move to the end; letters count 10 to 35;
  // the number mod 97 is 1.
  int mod = 0;
  for (size_t k = 0; k < code.size(); ++k) {
    const char c = code[(k + 4) % code.size()];
    int value;
    if (IsDigit(c)) {
      value = c - '0';
      mod = (mod * 10 + value) % 97;
    } else if (IsLower(c) || (c >= 'A' && c <= 'Z')) {
      value = (IsLower(c) ? c - 'a' : c - 'A') + 10;
      mod = (mod * 100 + value) % 97;
    } else {
      return false;
    }
  }
  return mod == 1;
}

std::vector<Finding> FindAll(std::string_view text) {
  std::vector<Finding> found;
  FindEmails(text, found);
  FindRuns(text, found);
  FindIbans(text, found);
  FindKeys(text, found);
  FindPrivateKeys(text, found);
  std::sort(found.begin(), found.end(), [](const Finding& a, const Finding& b) {
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  return found;
}

void Resolve(std::vector<Finding>& found) {
  std::sort(found.begin(), found.end(), [](const Finding& a, const Finding& b) {
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  // Overlapping matches become one span, named by the one that starts
  // first (then the longer): no part of either is left out.
  size_t kept = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    if (kept > 0 && found[i].start < found[kept - 1].end) {
      found[kept - 1].end = std::max(found[kept - 1].end, found[i].end);
      continue;
    }
    if (kept != i) found[kept] = std::move(found[i]);
    ++kept;
  }
  found.resize(kept);
}

size_t Pending(std::string_view text) {
  return std::min({EmailPending(text), RunPending(text), IbanPending(text), KeyPending(text),
                   PrivateKeyPending(text)});
}

std::vector<Finding> Scan(std::string_view text) {
  const Normalized n = Normalize(text);
  std::vector<Finding> found = FindAll(n.text);
  Resolve(found);
  for (Finding& f : found) {
    const size_t end = n.OriginalEnd(f.end);
    f.start = n.OriginalStart(f.start);
    f.end = end;
  }
  return found;
}

}  // namespace sb::safety
