// The built-in rule families: what in a text is personal data or a secret.
//
//   pii.email          e-mail addresses
//   pii.card_number    payment card numbers: 13-19 digits from an issuer
//                      range (2-6), optionally grouped, passing Luhn
//   pii.phone          E.164 ("+44 20 7946 0958") and NANP numbers written
//                      with separators ("(212) 555-0123", "1-212-555-0123")
//   pii.iban           IBANs, grouped or not, passing the mod-97 check
//   pii.ssn            US social security numbers written 123-45-6789
//   secret.api_key     API-key shapes: this platform's and Anthropic's and
//                      OpenAI's (sk-...), GitHub, Slack and Google keys
//   secret.cloud_key   AWS access key ids (AKIA/ASIA + 16)
//   secret.private_key the header of a PEM private-key block
//
// A run of digits and separators is judged whole (a card number followed by
// a phone number with one space between is neither). FindAll and Pending
// take normalised text (normalize.h); Scan takes text as written.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sb::safety {

struct Finding {
  std::string category;  // one of Categories()
  size_t start = 0;
  size_t end = 0;  // exclusive
};

const std::vector<std::string>& Categories();
// "an e-mail address": for messages to people (any policy category).
std::string Describe(std::string_view category);

// Matches in normalised text, ordered by start; they may overlap (an
// IBAN's digits may also pass as a card number): Resolve them, after
// leaving out what a policy allows.
std::vector<Finding> FindAll(std::string_view normalized);
// Orders `found` by start; overlapping matches become one span (their
// union), named by the one that starts first.
void Resolve(std::vector<Finding>& found);

// Where a match may still be in progress at the end of normalised `text`:
// the smallest offset from which more text could complete or extend one
// (an address or number that has begun, or one that is complete but could
// go on); text.size() when nothing could. Whatever FindAll says of the
// text before it is final.
size_t Pending(std::string_view normalized);

// Matches in text as written: normalised, found, resolved, offsets mapped
// back.
std::vector<Finding> Scan(std::string_view text);

bool LuhnValid(std::string_view digits);
// `code`: an IBAN's letters and digits, no spaces, either case.
bool IbanValid(std::string_view code);

}  // namespace sb::safety
