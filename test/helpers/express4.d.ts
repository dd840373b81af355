/** Express 4, installed as the dev alias "express4"; its API is the part of Express 5's types the tests use. */
declare module 'express4' {
  import express from 'express';
  export default express;
}
