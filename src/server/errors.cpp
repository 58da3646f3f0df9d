#include "server/errors.h"

#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "util/check.h"

namespace ds::server {

nlohmann::json ErrorReply::body() const {
  nlohmann::json error = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (param && !param->empty()) error["param"] = *param;
  if (code) error["code"] = *code;
  return {{"error", std::move(error)}};
}

HttpError bad_request(std::string message, std::string param, std::string code) {
  ErrorReply r;
  r.status = 400;
  r.type = "invalid_request_error";
  r.message = std::move(message);
  if (!param.empty()) r.param = std::move(param);
  if (!code.empty()) r.code = std::move(code);
  return HttpError(std::move(r));
}

HttpError model_not_found(const std::string& model) {
  ErrorReply r;
  r.status = 404;
  r.type = "invalid_request_error";
  r.message =
      fmt::format("The model `{}` does not exist; GET /v1/models lists the models this server has", model);
  r.param = "model";
  r.code = "model_not_found";
  return HttpError(std::move(r));
}

HttpError unavailable(std::string message, std::string code, int retry_after_s) {
  ErrorReply r;
  r.status = 503;
  r.type = "server_error";
  r.message = std::move(message);
  r.code = std::move(code);
  r.retry_after_s = retry_after_s;
  return HttpError(std::move(r));
}

ErrorReply error_reply(std::exception_ptr error, const std::string& request_id) {
  std::string detail;
  try {
    std::rethrow_exception(error);
  } catch (const HttpError& e) {
    return e.reply();
  } catch (const OverloadedError& e) {
    return unavailable(e.what(), "overloaded").reply();
  } catch (const EngineDeadError& e) {
    return unavailable("the engine has failed and this server is restarting; retry on another replica",
                       "engine_dead")
        .reply();
  } catch (const InvalidArgument& e) {
    return bad_request(e.what(), e.param()).reply();
  } catch (const UserError& e) {
    // Template errors and the like: the request asked for something that cannot be done.
    return bad_request(e.what()).reply();
  } catch (const std::exception& e) {
    detail = e.what();
  } catch (...) {
    detail = "unknown exception";
  }
  spdlog::error("request {}: internal error: {}", request_id, detail);
  ErrorReply r;
  r.status = 500;
  r.message = fmt::format("internal error (request id {})", request_id);
  r.code = "internal_error";
  return r;
}

}  // namespace ds::server
