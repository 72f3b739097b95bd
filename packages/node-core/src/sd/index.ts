export { type CreateAutomatic1111EngineParameters, createAutomatic1111Engine } from "./automatic1111.js";
export {
  AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS,
  type Automatic1111Catalog,
  type Automatic1111CatalogNeeds,
  type Automatic1111Checkpoint,
  type Automatic1111Lora,
  type Automatic1111MappingSettings,
  type Automatic1111Sampler,
  type Automatic1111Txt2ImgRequest,
  type Automatic1111Vae,
  automatic1111Sampler,
  automatic1111Txt2ImgRequest,
  type ControlnetModule,
  checkAutomatic1111Task,
  controlnetModule,
} from "./automatic1111Request.js";
export type { SdEngine, SdEngineInfo, SdGenerateOptions, SdGenerateResult } from "./engine.js";
export { SdEngineError, type SdEngineErrorReason } from "./errors.js";
export {
  type CreateSdExecutorParameters,
  createSdExecutor,
  type ExecuteSdTaskOptions,
  type SdExecutionResult,
  type SdExecutor,
} from "./sdExecutor.js";
