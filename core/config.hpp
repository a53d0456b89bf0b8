/// @file
/// Typed YAML configs: one description per struct drives reading, writing and docs.
///
/// A config struct lists its keys once, in a `describe(V&)` template:
///
/// @code
/// struct RuntimeOptions {
///   int threads = 0;
///   std::string backend = "mpi";
///   template <typename V> void describe(V& v) {
///     v.field("threads", threads, "intra-op threads per rank (0: the cores bound to it)", at_least(0));
///     v.field("backend", backend, "collective backend", one_of({"mpi", "local"}));
///   }
/// };
/// @endcode
///
/// `parse<S>(doc)` reads it (unknown keys, wrong types and out-of-range values are
/// hpcml::ConfigError naming the key, the value found and what is accepted),
/// `to_yaml(s)` writes the resolved config, and `reference(s)` lists every key for docs.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.hpp"

namespace hpcml::config {

/// What a key accepts beyond its type: a predicate and the words for errors and docs.
template <typename T>
struct Rule {
  std::function<bool(const T&)> accepts;  ///< empty: every value of the type
  std::string description;                ///< e.g. ">= 0", "one of [mpi, local]"
  /// Optional: for a rejected value, which part is wrong ("element 1 is -1").
  std::function<std::string(const T&)> explain;
};

template <typename T>
Rule<T> at_least(T lo) {
  std::ostringstream d;
  d << ">= " << lo;
  return {[lo](const T& v) { return v >= lo; }, d.str(), {}};
}
template <typename T>
Rule<T> in_range(T lo, T hi) {
  std::ostringstream d;
  d << "in [" << lo << ", " << hi << "]";
  return {[lo, hi](const T& v) { return v >= lo && v <= hi; }, d.str(), {}};
}
template <typename T>
Rule<T> positive() {
  return {[](const T& v) { return v > T{}; }, "> 0", {}};
}
/// Every element of a list satisfies `rule` (an empty list too); errors name the first that does not.
template <typename E>
Rule<std::vector<E>> each(Rule<E> rule) {
  Rule<std::vector<E>> out;
  out.description = "each " + rule.description;
  out.accepts = [accepts = rule.accepts](const std::vector<E>& v) {
    for (const auto& e : v) {
      if (!accepts(e)) return false;
    }
    return true;
  };
  out.explain = [accepts = rule.accepts](const std::vector<E>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!accepts(v[i])) {
        std::ostringstream d;
        d << "element " << i << " is " << v[i];
        return d.str();
      }
    }
    return std::string();
  };
  return out;
}
Rule<std::string> one_of(std::vector<std::string> choices);

namespace detail {
template <typename T> struct TypeName;
template <> struct TypeName<bool> { static constexpr const char* value = "a boolean"; };
template <> struct TypeName<int> { static constexpr const char* value = "an integer"; };
template <> struct TypeName<std::int64_t> { static constexpr const char* value = "an integer"; };
template <> struct TypeName<double> { static constexpr const char* value = "a number"; };
template <> struct TypeName<std::string> { static constexpr const char* value = "a string"; };
template <> struct TypeName<std::vector<int>> { static constexpr const char* value = "a list of integers"; };
template <> struct TypeName<std::vector<double>> { static constexpr const char* value = "a list of numbers"; };
template <> struct TypeName<std::vector<std::string>> { static constexpr const char* value = "a list of strings"; };
template <> struct TypeName<std::map<std::string, std::string>> {
  static constexpr const char* value = "a mapping of strings";
};
template <typename T> struct IsVector : std::false_type {};
template <typename E> struct IsVector<std::vector<E>> : std::true_type {};
/// A value as a YAML node; doubles in their shortest round-trip form ("0.05").
std::string format_double(double value);
template <typename T>
YAML::Node to_node(const T& value) {
  if constexpr (std::is_same_v<T, double>) {
    return YAML::Node(format_double(value));
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (double v : value) list.push_back(YAML::Node(format_double(v)));
    return list;
  } else {
    return YAML::Node(value);
  }
}
/// Short text of a node for messages: the scalar, a short list in flow form ("[a, 2]"),
/// "a mapping", "a list" (a long one) or "nothing".
std::string describe_node(const YAML::Node& node);
/// Levenshtein-nearest of `candidates` to `key`, if close enough to be a typo.
std::string nearest(const std::string& key, const std::vector<std::string>& candidates);
}  // namespace detail

/// A YAML document, where it came from, and the keys set on top of it.
struct Document {
  YAML::Node root;
  std::string source = "<defaults>";
  /// dotted key -> where its value came from ("--set runtime.threads",
  /// "environment variable HPCML_NUM_THREADS"), for keys set by apply_override.
  std::map<std::string, std::string> sources;
};

/// Loads `path` (ConfigError when unreadable or not YAML, naming the file and line),
/// then applies each "a.b.c=value" override in order.
Document load(const std::string& path, const std::vector<std::string>& overrides = {});
/// As load(), from YAML text (tests, and the empty config of commands without one).
Document from_string(const std::string& yaml, const std::string& source,
                     const std::vector<std::string>& overrides = {});
/// Sets one dotted key from "key=value". The value is parsed as YAML ("3" is an int,
/// "[1,2]" a list). `source` names where it came from in errors (default "--set <key>").
void apply_override(Document& doc, const std::string& assignment, const std::string& source = "");

/// The visitor that reads a struct from a YAML mapping and rejects what it does not know.
class Reader {
 public:
  Reader(YAML::Node node, std::string prefix, const Document& doc);

  template <typename T>
  void field(const char* key, T& value, const char* /*help*/, const Rule<T>& rule = {}) {
    seen_.push_back(key);
    if (!node_.IsMap()) return;
    const YAML::Node child = node_[key];
    if (!child.IsDefined()) return;
    T parsed{};
    if (!convert(child, parsed)) {
      fail(key, child, detail::TypeName<T>::value, rule.description, bad_element<T>(child));
    }
    if (rule.accepts && !rule.accepts(parsed)) {
      fail(key, child, detail::TypeName<T>::value, rule.description, rule.explain ? rule.explain(parsed) : "");
    }
    value = std::move(parsed);
  }

  template <typename S>
  void section(const char* key, S& sub, const char* /*help*/) {
    seen_.push_back(key);
    if (!node_.IsMap()) return;
    const YAML::Node child = node_[key];
    if (!child.IsDefined() || child.IsNull()) return;
    if (!child.IsMap()) fail(key, child, "a mapping", "");
    Reader reader(child, path(key), doc_);
    sub.describe(reader);
    reader.finish();
  }

  /// Throws ConfigError for the first key present in the YAML but not described.
  void finish() const;

 private:
  template <typename T>
  static bool convert(const YAML::Node& node, T& out) {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!node.IsScalar()) return false;
      out = node.Scalar();
      return true;
    } else if constexpr (std::is_arithmetic_v<T>) {
      return node.IsScalar() && YAML::convert<T>::decode(node, out);
    } else if constexpr (std::is_same_v<T, std::map<std::string, std::string>>) {
      if (node.IsNull()) return true;
      if (!node.IsMap()) return false;
      out.clear();
      for (const auto& item : node) {
        if (!item.first.IsScalar() || !item.second.IsScalar()) return false;
        out[item.first.Scalar()] = item.second.Scalar();
      }
      return true;
    } else {  // std::vector<E>
      if (!node.IsSequence()) return false;
      out.clear();
      for (const auto& item : node) {
        typename T::value_type element{};
        if (!convert(item, element)) return false;
        out.push_back(std::move(element));
      }
      return true;
    }
  }
  /// For a list that did not convert: which element is not of the element type.
  template <typename T>
  static std::string bad_element(const YAML::Node& node) {
    if constexpr (detail::IsVector<T>::value) {
      if (!node.IsSequence()) return "";
      size_t i = 0;
      for (const auto& item : node) {
        typename T::value_type element{};
        if (!convert(item, element)) return "element " + std::to_string(i) + " is " + detail::describe_node(item);
        ++i;
      }
    }
    return "";
  }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  [[noreturn]] void fail(const std::string& key, const YAML::Node& found, const std::string& type,
                         const std::string& rule, const std::string& detail = "") const;

  YAML::Node node_;
  std::string prefix_;
  const Document& doc_;
  std::vector<std::string> seen_;
};

/// The visitor that writes a struct's current values as YAML.
class Writer {
 public:
  explicit Writer(YAML::Node node) : node_(std::move(node)) {}
  template <typename T>
  void field(const char* key, T& value, const char*, const Rule<T>& = {}) {
    node_[key] = detail::to_node(value);
  }
  template <typename S>
  void section(const char* key, S& sub, const char*) {
    Writer writer(node_[key]);
    sub.describe(writer);
  }

 private:
  YAML::Node node_;
};

/// One row of the config reference (docs/config-reference.md, `hpcml config --reference`).
struct KeyDoc {
  std::string key, type, default_value, accepted, help;
};

/// The visitor that lists keys with type, default, accepted values and help.
class Documenter {
 public:
  explicit Documenter(std::string prefix = "") : prefix_(std::move(prefix)) {}
  template <typename T>
  void field(const char* key, T& value, const char* help, const Rule<T>& rule = {}) {
    YAML::Emitter out;
    out << YAML::Flow << detail::to_node(value);
    rows.push_back({path(key), std::string(detail::TypeName<T>::value), out.c_str(), rule.description, help});
  }
  template <typename S>
  void section(const char* key, S& sub, const char* help) {
    rows.push_back({path(key), "a mapping", "", "", help});
    Documenter sub_doc(path(key));
    sub.describe(sub_doc);
    rows.insert(rows.end(), sub_doc.rows.begin(), sub_doc.rows.end());
  }
  std::vector<KeyDoc> rows;

 private:
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  std::string prefix_;
};

/// Reads `doc` into `config`: keys present replace the values `config` holds
/// (defaults, or values taken from the environment). Throws ConfigError.
template <typename S>
void read_into(const Document& doc, S& config) {
  Reader reader(doc.root, "", doc);
  config.describe(reader);
  reader.finish();
}

/// Reads a whole config struct from `doc` (defaults for absent keys). Throws ConfigError.
template <typename S>
S parse(const Document& doc) {
  S config;
  read_into(doc, config);
  return config;
}

/// The resolved config as a YAML string (what runs record as config.yaml).
template <typename S>
std::string to_yaml(S config) {
  YAML::Node root(YAML::NodeType::Map);
  Writer writer(root);
  config.describe(writer);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

/// Checks the values code set on a config section, from command-line flags that mirror
/// its keys, against the section's rules, as parse() checks a file: a flag maps onto
/// its key instead of checking the value again. `key` is the section's dotted key
/// ("reducer"); `flags` maps its keys ("bucket_cap_mb") to the flags that set them
/// ("bench ddp --bucket-cap-mb"), which errors name as the source: "config error in
/// bench ddp --bucket-cap-mb: key 'reducer.bucket_cap_mb': expected a number in
/// [0.001, 4096], found '0'". Throws ConfigError.
template <typename S>
void check_section(S section, const std::string& key, const std::map<std::string, std::string>& flags) {
  YAML::Node node(YAML::NodeType::Map);
  Writer writer(node);
  section.describe(writer);
  Document doc;
  doc.source = "the defaults of '" + key + "'";
  for (const auto& [name, flag] : flags) doc.sources[key + "." + name] = flag;
  Reader reader(node, key, doc);
  section.describe(reader);
  reader.finish();
}

/// MiB, the unit of the `*_mb` keys, to the bytes that library options take (truncated).
inline std::int64_t mib_to_bytes(double mib) { return static_cast<std::int64_t>(mib * (1 << 20)); }
/// Bytes to MiB: a library option's default as a `*_mb` key's default.
inline double bytes_to_mib(std::int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

/// Every key of S with its default, as rows.
template <typename S>
std::vector<KeyDoc> reference() {
  S defaults;
  Documenter documenter;
  defaults.describe(documenter);
  return documenter.rows;
}
/// The rows as a Markdown table.
std::string reference_markdown(const std::vector<KeyDoc>& rows);

}  // namespace hpcml::config
