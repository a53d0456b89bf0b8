#include "core/config.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace hpcml::config {

Rule<std::string> one_of(std::vector<std::string> choices) {
  std::string description = "one of [";
  for (size_t i = 0; i < choices.size(); ++i) description += (i ? ", " : "") + choices[i];
  description += "]";
  return {[choices = std::move(choices)](const std::string& v) {
            return std::find(choices.begin(), choices.end(), v) != choices.end();
          },
          description,
          {}};
}

namespace detail {

std::string format_double(double value) {
  // The shortest of %.15g .. %.17g that reads back exactly.
  char text[32];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  return text;
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: {  // on one line: a newline inside shows as \n
      std::string text;
      for (char c : node.Scalar()) text += c == '\n' ? std::string("\\n") : std::string(1, c);
      return "'" + text + "'";
    }
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: {
      // Short lists of scalars in flow form ("[64, a]"), on one line; others by size.
      std::string text = "[";
      bool scalars = true;
      for (const auto& item : node) {
        scalars = scalars && item.IsScalar();
        if (scalars) text += (text.size() > 1 ? ", " : "") + item.Scalar();
      }
      text += "]";
      const bool short_text = scalars && text.size() <= 60 && text.find('\n') == std::string::npos;
      return short_text ? text : "a list of " + std::to_string(node.size()) + " elements";
    }
    default: return "nothing";
  }
}

std::string nearest(const std::string& key, const std::vector<std::string>& candidates) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t above = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  std::string best;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;
  for (const auto& candidate : candidates) {
    const size_t d = distance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

}  // namespace detail

namespace {
std::string where(const Document& doc, const std::string& key) {
  auto it = doc.sources.find(key);
  return it != doc.sources.end() ? it->second : doc.source;
}

// yaml-cpp keeps both entries of a key written twice in one mapping, and lookups
// silently return the first: a config error here, naming the key and both lines.
void reject_duplicate_keys(const YAML::Node& node, const std::string& prefix, const std::string& source) {
  if (node.IsSequence()) {
    size_t i = 0;
    for (const auto& item : node) reject_duplicate_keys(item, prefix + "[" + std::to_string(i++) + "]", source);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> first_line;
  for (const auto& item : node) {
    const std::string key = item.first.IsScalar() ? item.first.Scalar() : detail::describe_node(item.first);
    const std::string full = prefix.empty() ? key : prefix + "." + key;
    const int line = item.first.Mark().line + 1;
    const auto [it, inserted] = first_line.emplace(key, line);
    if (!inserted) {
      HPCML_THROW(ConfigError, "config error in ", source, ": key '", full, "' appears twice in one mapping (lines ",
                  it->second, " and ", line, "); keep one");
    }
    reject_duplicate_keys(item.second, full, source);
  }
}
}  // namespace

Document from_string(const std::string& yaml, const std::string& source, const std::vector<std::string>& overrides) {
  Document doc;
  doc.source = source;
  try {
    doc.root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    HPCML_THROW(ConfigError, "config error in ", source, ": not valid YAML at line ", e.mark.line + 1,
                ", column ", e.mark.column + 1, ": ", e.msg);
  }
  if (doc.root.IsNull()) doc.root = YAML::Node(YAML::NodeType::Map);
  reject_duplicate_keys(doc.root, "", source);
  if (!doc.root.IsMap()) {
    HPCML_THROW(ConfigError, "config error in ", source, ": expected a mapping of keys at the top level, found ",
                detail::describe_node(doc.root));
  }
  for (const auto& assignment : overrides) apply_override(doc, assignment);
  return doc;
}

Document load(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) HPCML_THROW(ConfigError, "config error: cannot read config file '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  return from_string(text.str(), path, overrides);
}

void apply_override(Document& doc, const std::string& assignment, const std::string& source) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    HPCML_THROW(ConfigError, "config error: --set '", assignment, "': expected KEY=VALUE, e.g. runtime.threads=2");
  }
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    HPCML_THROW(ConfigError, "config error in ", source.empty() ? "--set " + key : source, ": value is not valid YAML: ",
                e.msg);
  }
  reject_duplicate_keys(value, key, source.empty() ? "--set " + key : source);
  // Walk (and create) the mapping path. yaml-cpp nodes are handles, so
  // reassigning `node` to a child must go through reset(), not operator=.
  YAML::Node node = doc.root;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) HPCML_THROW(ConfigError, "config error: --set '", assignment, "': empty key component");
    if (dot == std::string::npos) {
      node[part] = value;
      break;
    }
    YAML::Node child = node[part];
    if (!child.IsDefined() || child.IsNull()) {
      node[part] = YAML::Node(YAML::NodeType::Map);
      child = node[part];
    } else if (!child.IsMap()) {
      HPCML_THROW(ConfigError, "config error: --set ", key, ": '", key.substr(0, dot), "' is ",
                  detail::describe_node(child), ", not a mapping");
    }
    node.reset(child);
    start = dot + 1;
  }
  doc.sources[key] = source.empty() ? "--set " + key : source;
}

Reader::Reader(YAML::Node node, std::string prefix, const Document& doc)
    : node_(std::move(node)), prefix_(std::move(prefix)), doc_(doc) {}

void Reader::fail(const std::string& key, const YAML::Node& found, const std::string& type,
                  const std::string& rule, const std::string& detail) const {
  const std::string full = path(key);
  // "one of [...]" already says the type.
  const std::string expected = rule.empty() ? type : rule.rfind("one of", 0) == 0 ? rule : type + " " + rule;
  HPCML_THROW(ConfigError, "config error in ", where(doc_, full), ": key '", full, "': expected ", expected,
              ", found ", detail::describe_node(found), detail.empty() ? "" : " (" + detail + ")");
}

void Reader::finish() const {
  if (!node_.IsMap()) return;
  for (const auto& item : node_) {
    const std::string key = item.first.as<std::string>();
    if (std::find(seen_.begin(), seen_.end(), key) != seen_.end()) continue;
    std::string accepted;
    for (const auto& s : seen_) accepted += (accepted.empty() ? "" : ", ") + s;
    const std::string guess = detail::nearest(key, seen_);
    HPCML_THROW(ConfigError, "config error in ", where(doc_, path(key)), ": unknown key '", path(key), "'",
                guess.empty() ? "" : " (did you mean '" + path(guess) + "'?)", "; accepted keys",
                prefix_.empty() ? "" : " in '" + prefix_ + "'", ": ", accepted);
  }
}

std::string reference_markdown(const std::vector<KeyDoc>& rows) {
  std::string out = "| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    out += "| `" + r.key + "` | " + r.type + " | " + (r.default_value.empty() ? "" : "`" + r.default_value + "`") +
           " | " + r.accepted + " | " + r.help + " |\n";
  }
  return out;
}

}  // namespace hpcml::config
